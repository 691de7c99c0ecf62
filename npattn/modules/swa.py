"""Multi-head attention with a sliding window (Gemma, Mistral), the chapter 4 bonus class:
query position i attends key position j when 0 <= i - j < W, W = sliding_window_size.

Shape legend: B batch, T query tokens, S key tokens, H = num_heads, E = head_dim = d_out // H,
W = sliding_window_size (None: plain causal).
"""

from __future__ import annotations

from .._checks import check_positive_int, make_rng
from ..fast.dispatch import MODERN_ATTN_IMPLS, attention_backward
from ..fast.modern_tiled import tiled_attention_forward
from ..ops.heads import (
    merge_heads_backward,
    merge_heads_forward,
    split_heads_backward,
    split_heads_forward,
)
from ..ops.sdpa import sdpa_forward
from ._input import attn_impl_property, check_attention_args
from ._kv import CacheView, KVCacheMixin, attention_mask, check_key_padding_mask, check_tokens
from .base import Module
from .linear import Linear


class MultiHeadAttentionWithSWA(KVCacheMixin, Module):
    """The chapter's MultiHeadAttention with a sliding-window causal mask and no mask buffer.

    Shapes: x (B, T, d_in) -> context_vec (B, T, d_out).

    Forward (walked backwards in `backward`):
        1. queries, keys, values = W_query(x), W_key(x), W_value(x)    (B, T, d_out) each
        2. split heads                                     (B, T, d_out) -> (B, H, T, E)
        3. cache: up to W - 1 earlier keys and values in front (use_cache only; then steps 4-7
           run forward only in _attend_cached, reading the cache in place)
        4. mask: 0 <= i - j < W at absolute positions, & key padding  (T, S) or (B, 1, T, S)
        5. SDPA with dropout on the weights                            (B, H, T, E)
        6. merge heads                                     (B, H, T, E) -> (B, T, d_out)
        7. context_vec = out_proj(context)                             (B, T, d_out)
    The cache keeps the last W positions after each call; a chunk of T tokens attends to at
    most W + T - 1 keys.

    attn_impl: "reference" (the default: the steps above), or the opt-in "tiled", which runs
    steps 4-5 as flash_attention_forward(..., window=W) (npattn/fast/modern_tiled.py): tiles
    wholly outside the window are skipped and no (B, H, T, S) weights or (T, S) mask are formed
    (key padding is passed as a (B, 1, 1, S) mask), so memory is linear in T, and so is time
    for a fixed W. The numbers are the reference's; attn_weights and dropout_mask are None,
    and dropout draws its own masks (not the reference's). The KV-cache path (use_cache=True)
    runs as above whatever attn_impl says.
    """

    attn_impl = attn_impl_property(MODERN_ATTN_IMPLS)  # npattn/fast/dispatch.py
    cache_k, cache_v = CacheView(0), CacheView(1)  # (B, H, min(S_cached, W), E), read-only

    def __init__(
        self,
        d_in: int,
        d_out: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
        sliding_window_size: int | None = None,
        *,
        rng=None,
        attn_impl: str = "reference",
    ):
        super().__init__()
        self.attn_impl = attn_impl
        self.d_in, self.d_out, _, self.dropout, self.num_heads = check_attention_args(
            d_in, d_out, dropout=dropout, num_heads=num_heads, qkv_bias=qkv_bias
        )
        self.sliding_window_size = (
            None
            if sliding_window_size is None
            else check_positive_int(sliding_window_size, "sliding_window_size")
        )
        self.head_dim = self.d_out // self.num_heads
        self.rng = make_rng(rng)
        self.W_query = Linear(d_in, d_out, bias=qkv_bias, rng=self.rng)
        self.W_key = Linear(d_in, d_out, bias=qkv_bias, rng=self.rng)
        self.W_value = Linear(d_in, d_out, bias=qkv_bias, rng=self.rng)
        self.out_proj = Linear(d_out, d_out, rng=self.rng)
        self.attn_weights = None
        self.dropout_mask = None
        self.reset_cache()

    def _kv_limits(self) -> tuple:
        return self.sliding_window_size, None  # the cache holds the last W positions

    def forward(self, x, use_cache: bool = False, *, key_padding_mask=None):
        x = check_tokens(x, self.d_in, self.dtype)
        B, T = x.shape[:2]
        use_cache = self._check_call(B, use_cache, key_padding_mask)
        W = self.sliding_window_size
        # 1. projections                   (B, T, d_in) -> (B, T, d_out) each
        queries = self.W_query(x)
        keys = self.W_key(x)
        values = self.W_value(x)
        # 2. split heads                   (B, T, d_out) -> (B, H, T, E)
        queries, q_split = split_heads_forward(queries, self.num_heads)
        keys, k_split = split_heads_forward(keys, self.num_heads)
        values, v_split = split_heads_forward(values, self.num_heads)
        # 3. the cache: (B, H, S_cached, E) + (B, H, T, E); the chunk's first query needs the
        #    W - 1 keys before it, so W + T - 1 keys are attended to at most
        if use_cache:
            return self._attend_cached(queries, *self._kv.stage(keys, values))
        S = keys.shape[2]
        # 4. mask                          (T, S), or (B, 1, T, S) with key padding
        kpm = None if key_padding_mask is None else check_key_padding_mask(key_padding_mask, B, S)
        dropout_p = self.dropout if self.training else 0.0
        if self.attn_impl == "tiled":  # 4.-5. opt-in, no (T, S) array: fast/modern_tiled.py
            context, sdpa_cache = tiled_attention_forward(
                queries, keys, values, kpm, window=W, dropout_p=dropout_p, rng=self.rng
            )
        else:
            mask = attention_mask(0, T, 0, S, window=W, kpm=kpm)
            # 5. SDPA                      (B, H, T, E)
            context, sdpa_cache = sdpa_forward(queries, keys, values, mask, dropout_p, rng=self.rng)
        # 6. merge heads                   (B, H, T, E) -> (B, T, d_out)
        context, merge_cache = merge_heads_forward(context)
        # 7. output projection             (B, T, d_out) -> (B, T, d_out)
        context_vec = self.out_proj(context)
        reference = self.attn_impl == "reference"
        self.attn_weights = sdpa_cache.attn_weights if reference else None  # (B, H, T, S)
        self.dropout_mask = sdpa_cache.keep if reference else None  # keep-mask, or None
        self.reset_cache()
        self._cache = (q_split, k_split, v_split, sdpa_cache, merge_cache)
        return context_vec

    def backward(self, dcontext_vec):
        q_split, k_split, v_split, sdpa_cache, merge_cache = self._require_full_forward()
        # 7.
        dcontext = self.out_proj.backward(dcontext_vec)  # (B, T, d_out)
        # 6.
        dcontext = merge_heads_backward(dcontext, merge_cache)  # (B, H, T, E)
        # 5.
        # the backward of whichever op ran: sdpa's or the tiled one
        dqueries, dkeys, dvalues = attention_backward(dcontext, sdpa_cache)  # (B, H, T, E) each
        # 2.
        dqueries = split_heads_backward(dqueries, q_split)  # (B, T, d_out)
        dkeys = split_heads_backward(dkeys, k_split)
        dvalues = split_heads_backward(dvalues, v_split)
        # 1. x feeds all three projections: their terms of dx are summed
        dx = self.W_query.backward(dqueries)
        dx += self.W_key.backward(dkeys)
        dx += self.W_value.backward(dvalues)
        return dx

    def extra_repr(self) -> str:
        return (
            f"d_in={self.d_in}, d_out={self.d_out}, dropout={self.dropout}, "
            f"num_heads={self.num_heads}, sliding_window_size={self.sliding_window_size}"
        )
