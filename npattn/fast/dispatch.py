"""attn_impl: which arrangement of the same attention maths a chapter class runs.

    "reference"  the default: the chapter's steps with the reference ops (npattn/ops/), run by
                 the modules themselves: W_query(x), W_key(x), W_value(x), split heads,
                 F.sdpa_forward with the mask buffer as a boolean mask, merge heads, out_proj.
    "blocked"    one GEMM for W_query, W_key and W_value (fast/fused_linear.py), then
                 F.causal_sdpa_forward (fast/blocked.py): row blocks that skip the keys above
                 the diagonal, heads side by side on BLAS's threads. A mask buffer that is no
                 longer the chapter's triangle is passed to F.sdpa_forward as a boolean mask.
                 MultiHeadAttention runs out_proj on the same op as the projections.
    "tiled"      the same GEMM, then F.flash_attention_forward (fast/tiled.py): memory linear in
                 T, and m.attn_weights is None (the tiled path never forms the weights).
    "auto"       choose_attn_impl(T, B * H) picks "blocked" or "tiled" at every forward.

All give the same outputs and gradients (tests/test_dispatch.py). With dropout, "reference" and
"blocked" draw the same keep-mask from the module's generator; "tiled" draws one key and
regenerates its tile masks from it.
Shapes: x (B, T, d_in); queries, keys, values (B, H, T, E); mask_buffer (context_length,
context_length), 1 = masked.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _guard
from ..ops.heads import (
    merge_heads_backward,
    merge_heads_forward,
    split_qkv_heads_backward,
    split_qkv_heads_forward,
)
from ..ops.sdpa import SDPACache, sdpa_backward, sdpa_forward
from .blocked import CausalCache, causal_sdpa_backward, causal_sdpa_forward
from .fused_linear import fused_linear_backward, fused_linear_forward
from .tiled import flash_attention_backward, flash_attention_forward, flash_dropout_mask

ATTN_IMPLS = ("reference", "blocked", "tiled", "auto")
MODERN_ATTN_IMPLS = ("reference", "tiled")  # GQA, SWA, Qwen3: fast/modern_tiled.py
FAST_IMPLS = ("blocked", "tiled")

# choose_attn_impl's rule, measured on 2 cores (docs/benchmarks/cpu.md: the main table and
# the scaling table), causal forward + backward, d = 768, 12 heads, medians of interleaved
# repeats:
# - below T = 1024 the two are within a few percent of each other (B = 4, T = 512: blocked
#   328 ms, tiled 317 ms; B = 1, T = 512: 96 and 94 ms), and blocked keeps m.attn_weights
#   for the chapter's small examples;
# - from T = 1024 tiled is as fast or faster, whatever the number of heads (B = 1: 232
#   against 506 ms at T = 1024, 486 against 600 ms at T = 2048; B = 2 and 4 at T = 1024, with
#   `bench.py --sections main --size B,1024,768,12`: 376 against 391 ms, 737 against 741 ms),
#   and its memory grows as T, not T^2.
AUTO_TILED_MIN_TOKENS = 1024  # below this, blocked
AUTO_MAX_WEIGHTS = 2**28  # blocked stores (B, H, T, T) weights: at most 1 GiB of float32
CAUSAL_CHECK_ROWS = 256  # rows of the mask buffer compared at a time: no (T, T) temporary


def check_attn_impl(attn_impl, choices: tuple = ATTN_IMPLS) -> str:
    """attn_impl if it is one of `choices`, else a ValueError naming them."""
    if not isinstance(attn_impl, str) or attn_impl not in choices:
        raise ValueError(f"attn_impl must be one of {choices}, got {attn_impl!r}")
    return attn_impl


def choose_attn_impl(T: int, batch_heads: int) -> str:
    """attn_impl="auto"'s choice for T tokens and B * H heads: "blocked" or "tiled"."""
    if T < AUTO_TILED_MIN_TOKENS and batch_heads * T * T <= AUTO_MAX_WEIGHTS:
        return "blocked"  # keeps m.attn_weights; as fast as tiled at these sizes
    return "tiled"  # memory linear in T


def resolve_attn_impl(attn_impl: str, T: int, batch_heads: int) -> str:
    """The path a forward runs: attn_impl itself, or choose_attn_impl's pick for "auto"."""
    return choose_attn_impl(T, batch_heads) if attn_impl == "auto" else attn_impl


def _is_causal_buffer(mask_buffer: np.ndarray, T: int) -> bool:
    """Whether mask_buffer[:T, :T] is still the chapter's triu(ones, 1) (1 = masked)."""
    for r0 in range(0, T, CAUSAL_CHECK_ROWS):
        rows = mask_buffer[r0 : r0 + CAUSAL_CHECK_ROWS, :T] != 0  # (rows, T), True = masked
        if not np.array_equal(rows, ~np.tri(rows.shape[0], T, k=r0, dtype=bool)):
            return False
    return True


def attention_forward(attn_impl, queries, keys, values, mask_buffer, dropout_p, rng):
    """Scores, mask, softmax, dropout and @ values, by "blocked" or "tiled".

    Shapes: queries, keys, values (..., T, E); mask_buffer (context_length, context_length),
    1 = masked, or None -> (context (..., T, E), cache, attn_weights (..., T, T) or None).
    """
    if attn_impl not in FAST_IMPLS:
        raise ValueError(f"attn_impl must be one of {FAST_IMPLS} here, got {attn_impl!r}")
    T = queries.shape[-2]
    # the causal buffer becomes is_causal, so no (T, T) mask is made and blocks above the
    # diagonal are skipped; any other buffer is passed as the boolean mask it stands for
    is_causal = mask_buffer is not None and _is_causal_buffer(mask_buffer, T)
    mask = None if is_causal or mask_buffer is None else mask_buffer[:T, :T] == 0  # True = attend
    if attn_impl == "blocked":
        if is_causal:
            context, cache = causal_sdpa_forward(queries, keys, values, dropout_p, rng=rng)
        else:
            context, cache = sdpa_forward(queries, keys, values, mask, dropout_p, rng=rng)
        return context, cache, cache.attn_weights  # (..., T, T), before dropout
    context, cache = flash_attention_forward(
        queries, keys, values, mask, is_causal, dropout_p=dropout_p, rng=rng
    )
    return context, cache, None


def attention_backward(dcontext, cache):
    """The backward of whichever op made the cache: (dqueries, dkeys, dvalues), and dsinks
    last when an sdpa or tiled forward was given sinks."""
    if isinstance(cache, CausalCache):
        return causal_sdpa_backward(dcontext, cache)
    if isinstance(cache, SDPACache):
        return sdpa_backward(dcontext, cache)
    return flash_attention_backward(dcontext, cache)


def keep_mask(cache):
    """The boolean keep-mask (True = kept) the forward that made `cache` drew, or None.

    Shapes: -> (..., T, T). The tiled path stores only a key; its mask is assembled here.
    """
    if isinstance(cache, (CausalCache, SDPACache)):
        return cache.keep
    return flash_dropout_mask(cache)


class FusedAttentionCache(NamedTuple):
    qkv: tuple  # fused_linear_forward's cache: x (B, T, d_in), stacked weights, offsets
    split: tuple  # ((B, T, 3 * d_out),)
    attention: tuple  # CausalCache, SDPACache or FlashCache
    merge: tuple  # ((B, H, T, E),)


def fused_attention_forward(attn_impl, x, qkv_layers, num_heads, mask_buffer, dropout_p, rng):
    """Steps 1-4 of MultiHeadAttention with one GEMM for the three projections.

    qkv_layers: W_query, W_key and W_value (anything with .weight (d_out, d_in) and .bias).
    Shapes: x (B, T, d_in) -> context (B, T, d_out), cache, attn_weights (B, H, T, T) or None.
    """
    # 1. queries, keys, values = W_query(x), W_key(x), W_value(x), as one matrix product
    weights = [layer.weight for layer in qkv_layers]
    biases = None if qkv_layers[0].bias is None else [layer.bias for layer in qkv_layers]
    qkv, qkv_cache = fused_linear_forward(x, weights, biases)  # -> (B, T, 3 * d_out)
    qkv = _guard.readonly(qkv)  # ours alone: the caches below keep its views, not copies
    # 2. split heads (views)                    (B, T, 3 * d_out) -> 3 x (B, H, T, E)
    (queries, keys, values), split_cache = split_qkv_heads_forward(qkv, num_heads)
    # 3. causal attention per head              (B, H, T, E)
    context, attn_cache, attn_weights = attention_forward(
        attn_impl, queries, keys, values, mask_buffer, dropout_p, rng
    )
    # 4. merge heads                            (B, H, T, E) -> (B, T, d_out)
    context, merge_cache = merge_heads_forward(_guard.readonly(context))  # ours alone
    return (
        context,
        FusedAttentionCache(qkv_cache, split_cache, attn_cache, merge_cache),
        attn_weights,
    )


def fused_attention_backward(dcontext, cache: FusedAttentionCache):
    """Gradients of fused_attention_forward, steps 4 -> 1.

    Shapes: dcontext (B, T, d_out) -> dx (B, T, d_in), dweights 3 x (d_out, d_in),
    dbiases 3 x (d_out,) or None (W_query's, W_key's, W_value's, in that order).
    """
    # 4.
    dcontext = merge_heads_backward(dcontext, cache.merge)  # (B, H, T, E)
    # 3.
    dqueries, dkeys, dvalues = attention_backward(dcontext, cache.attention)
    # 2.
    dqkv = split_qkv_heads_backward(dqueries, dkeys, dvalues, cache.split)  # (B, T, 3 d_out)
    # 1. x feeds all three projections: the one GEMM sums their three terms of dx
    return fused_linear_backward(dqkv, cache.qkv)
