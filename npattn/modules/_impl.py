"""Which attention a chapter class runs: the naive SDPA or the tiled (FlashAttention-style) one.

    attn_impl="naive"  forms the (B, H, T, T) weights and keeps them in m.attn_weights, as in
                       the chapter: F.causal_sdpa_forward (head by head, blocks above the
                       diagonal skipped) for the chapter's causal buffer, F.sdpa_forward with
                       the buffer as a boolean mask otherwise (and without a buffer).
    attn_impl="tiled"  F.flash_attention_forward: memory linear in T; m.attn_weights is None,
                       because the tiled path never forms the weights (that is its point).
    attn_impl="auto"   tiled when T >= AUTO_TILED_MIN_TOKENS, naive below.

Both give the same output and gradients (tests/test_tiled.py); with dropout they draw
different keep-masks from the module's generator (sdpa: one (..., T, T) draw; tiled: one key).
Shapes: queries, keys, values (..., T, E); mask_buffer (context_length, context_length).
"""

from __future__ import annotations

import numpy as np

from ..ops.causal import CausalCache, causal_sdpa_backward, causal_sdpa_forward
from ..ops.sdpa import SDPACache, sdpa_backward, sdpa_forward
from ..ops.tiled import flash_attention_backward, flash_attention_forward, flash_dropout_mask
from ._input import attend_mask

ATTN_IMPLS = ("naive", "tiled", "auto")
# Measured (docs/benchmarks/tiled.md, causal forward+backward, E = 64, one BLAS thread): at
# T = 512 tiled takes 1.04x naive's time and 0.82x its memory with B*H = 1, 0.57x and 0.25x with
# B*H = 16; from T = 1024 it wins on both at either size. Below 512 naive is as fast or faster
# and keeps m.attn_weights for the chapter's small examples.
AUTO_TILED_MIN_TOKENS = 512
CAUSAL_CHECK_ROWS = 256  # rows of the mask buffer compared at a time: no (T, T) temporary


def check_attn_impl(attn_impl) -> str:
    if not isinstance(attn_impl, str) or attn_impl not in ATTN_IMPLS:
        raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
    return attn_impl


class AttnImpl:
    """The attn_impl attribute of a module class: checked whenever it is set, so a bad name
    set after construction raises at once rather than running some other path."""

    def __get__(self, module, owner=None):
        return self if module is None else module.__dict__["_attn_impl"]

    def __set__(self, module, value) -> None:
        module.__dict__["_attn_impl"] = check_attn_impl(value)


def _is_causal_buffer(mask_buffer: np.ndarray, T: int) -> bool:
    """Whether mask_buffer[:T, :T] is still the chapter's triu(ones, 1) (1 = masked)."""
    for r0 in range(0, T, CAUSAL_CHECK_ROWS):
        rows = mask_buffer[r0 : r0 + CAUSAL_CHECK_ROWS, :T] != 0  # (rows, T), True = masked
        if not np.array_equal(rows, ~np.tri(rows.shape[0], T, k=r0, dtype=bool)):
            return False
    return True


def attention_forward(attn_impl, queries, keys, values, mask_buffer, dropout_p, rng):
    """Scores, mask, softmax, dropout and @ values by the chosen implementation.

    Shapes: queries, keys, values (..., T, E); mask_buffer (context_length, context_length),
    1 = masked, or None -> (context (..., T, E), cache, attn_weights (..., T, T) or None).
    """
    T = queries.shape[-2]
    # the causal buffer becomes is_causal, so no (T, T) mask is made and blocks above the
    # diagonal are skipped; any other buffer is passed as the boolean mask it stands for
    is_causal = mask_buffer is not None and _is_causal_buffer(mask_buffer, T)
    if attn_impl == "naive" or (attn_impl == "auto" and T < AUTO_TILED_MIN_TOKENS):
        if is_causal:
            context, cache = causal_sdpa_forward(queries, keys, values, dropout_p, rng=rng)
        else:
            mask = None if mask_buffer is None else attend_mask(mask_buffer, T)  # (T, T)
            context, cache = sdpa_forward(queries, keys, values, mask, dropout_p, rng=rng)
        return context, cache, cache.attn_weights  # (..., T, T), before dropout
    mask = None if is_causal or mask_buffer is None else attend_mask(mask_buffer, T)
    context, cache = flash_attention_forward(
        queries, keys, values, mask, is_causal, dropout_p=dropout_p, rng=rng
    )
    return context, cache, None


def keep_mask(cache):
    """The boolean keep-mask (True = kept) the forward that made `cache` drew, or None.

    Shapes: -> (..., T, T). The tiled path stores only a key; its mask is assembled here.
    """
    if isinstance(cache, CausalCache):
        return cache.keep
    if isinstance(cache, SDPACache):
        return cache.dropout_cache[0]
    return flash_dropout_mask(cache)


def attention_backward(dcontext, cache):
    """The backward of whichever implementation made the cache: (dqueries, dkeys, dvalues)."""
    if isinstance(cache, CausalCache):
        return causal_sdpa_backward(dcontext, cache)
    if isinstance(cache, SDPACache):
        return sdpa_backward(dcontext, cache)
    return flash_attention_backward(dcontext, cache)
