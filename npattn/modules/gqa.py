"""Grouped-query attention (GQA), the chapter 4 bonus class: H query heads share G key/value
heads, each key/value head serving a group of H // G query heads. G = 1 is multi-query
attention (MQA), G = H is multi-head attention.

Shape legend: B batch, T query tokens, S key tokens, H = num_heads, G = num_kv_groups,
E = head_dim = d_out // H, d_in / d_out as in the chapter.
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
from ._kv import (
    CacheView,
    KVCacheMixin,
    attention_mask,
    check_key_padding_mask,
    check_tokens,
)
from .base import Module
from .linear import Linear


class GroupedQueryAttention(KVCacheMixin, Module):
    """Causal grouped-query attention; out_proj has no bias.

    Shapes: x (B, T, d_in) -> context_vec (B, T, d_out); with x_kv (B, S, d_in) the keys and
    values come from x_kv (cross-attention, not causal).

    Forward (walked backwards in `backward`):
        1. queries = W_query(x); keys, values = W_key(x_kv), W_value(x_kv)
                                       (B, T, H * E); (B, S, G * E) each, x_kv = x by default
        2. split heads                 queries (B, H, T, E); keys, values (B, G, S, E)
        3. cache: earlier chunks' keys and values in front (use_cache only; then steps 4-7
           run forward only in _attend_cached, reading the cache in place)
        4. mask: causal at absolute positions, & key padding          (T, S) or (B, 1, T, S)
        5. SDPA, each key/value head repeated for its group (enable_gqa)   (B, H, T, E)
        6. merge heads                 (B, H, T, E) -> (B, T, d_out)
        7. context_vec = out_proj(context)                                  (B, T, d_out)

    attn_impl: "reference" (the default: the steps above), or the opt-in "tiled", which runs
    steps 4-5 as flash_attention_forward (npattn/fast/modern_tiled.py): the causal mask and
    the key padding are passed as is_causal (or a window of T) and a (B, 1, 1, S) mask, so no
    (B, H, T, S) weights and no (T, S) mask are formed: memory linear in T. The numbers are
    the reference's; attn_weights and dropout_mask are None, and dropout draws its own masks
    (not the reference's). The KV-cache path (use_cache=True) runs as above whatever
    attn_impl says.
    """

    attn_impl = attn_impl_property(MODERN_ATTN_IMPLS)  # npattn/fast/dispatch.py
    cache_k, cache_v = CacheView(0), CacheView(1)  # (B, G, S_cached, E), read-only views

    def __init__(
        self,
        d_in: int,
        d_out: int,
        dropout: float,
        num_heads: int,
        num_kv_groups: int,
        qkv_bias: bool = False,
        *,
        rng=None,
        attn_impl: str = "reference",
    ):
        super().__init__()
        self.attn_impl = attn_impl
        self.d_in, self.d_out, _, self.dropout, self.num_heads = check_attention_args(
            d_in, d_out, dropout=dropout, num_heads=num_heads, qkv_bias=qkv_bias
        )
        self.num_kv_groups = check_positive_int(num_kv_groups, "num_kv_groups")
        if self.num_heads % self.num_kv_groups:
            raise ValueError(
                f"num_heads ({num_heads}) must be divisible by num_kv_groups ({num_kv_groups})"
            )
        self.head_dim = self.d_out // self.num_heads
        self.group_size = self.num_heads // self.num_kv_groups
        self.rng = make_rng(rng)
        kv_width = self.num_kv_groups * self.head_dim
        # the book's registration order, which is also the state_dict order
        self.W_key = Linear(d_in, kv_width, bias=qkv_bias, rng=self.rng)
        self.W_value = Linear(d_in, kv_width, bias=qkv_bias, rng=self.rng)
        self.W_query = Linear(d_in, d_out, bias=qkv_bias, rng=self.rng)
        self.out_proj = Linear(d_out, d_out, bias=False, rng=self.rng)
        self.attn_weights = None
        self.dropout_mask = None
        self.reset_cache()

    def forward(self, x, use_cache: bool = False, *, key_padding_mask=None, x_kv=None):
        x = check_tokens(x, self.d_in, self.dtype)
        B, T = x.shape[:2]
        cross = x_kv is not None
        if cross:
            if use_cache:
                raise ValueError("x_kv (cross-attention) cannot be combined with use_cache=True")
            x_kv = check_tokens(x_kv, self.d_in, self.dtype, "x_kv")
            if x_kv.shape[0] != B:
                raise ValueError(f"x_kv must have x's batch size {B}, got {x_kv.shape[0]}")
        use_cache = self._check_call(B, use_cache, key_padding_mask)
        source = x_kv if cross else x
        # 1. projections                   (B, T, d_in) -> (B, T, H * E); (B, S, G * E) each
        queries = self.W_query(x)
        keys = self.W_key(source)
        values = self.W_value(source)
        # 2. split heads                   -> (B, H, T, E); (B, G, S, E) each
        queries, q_split = split_heads_forward(queries, self.num_heads)
        keys, k_split = split_heads_forward(keys, self.num_kv_groups)
        values, v_split = split_heads_forward(values, self.num_kv_groups)
        if use_cache:  # 3.-7. with the cache, forward only: this chunk joins the cache
            return self._attend_cached(queries, *self._kv.stage(keys, values))
        S = keys.shape[2]
        # 4. mask                          (T, S), or (B, 1, T, S) with key padding
        kpm = None
        if key_padding_mask is not None:
            kpm = check_key_padding_mask(key_padding_mask, B, S, "x_kv" if cross else "x (no x_kv)")
        dropout_p = self.dropout if self.training else 0.0
        if self.attn_impl == "tiled":  # 4.-5. opt-in, no (T, S) array: fast/modern_tiled.py
            context, sdpa_cache = tiled_attention_forward(
                queries, keys, values, kpm, causal=not cross, dropout_p=dropout_p,
                rng=self.rng, enable_gqa=True,
            )  # fmt: skip
        else:
            if cross:
                mask = None if kpm is None else kpm[:, None, None, :]  # (B, 1, 1, S), not causal
            else:
                mask = attention_mask(0, T, 0, S, kpm=kpm)
            # 5. SDPA; key/value head g serves query heads g * H/G .. (g + 1) * H/G - 1
            context, sdpa_cache = sdpa_forward(
                queries, keys, values, mask, dropout_p, enable_gqa=True, rng=self.rng
            )  # (B, H, T, E)
        # 6. merge heads                   (B, H, T, E) -> (B, T, d_out)
        context, merge_cache = merge_heads_forward(context)
        # 7. output projection             (B, T, d_out) -> (B, T, d_out)
        context_vec = self.out_proj(context)
        reference = self.attn_impl == "reference"
        self.attn_weights = sdpa_cache.attn_weights if reference else None  # (B, H, T, S)
        self.dropout_mask = sdpa_cache.keep if reference else None  # keep-mask, or None
        self.reset_cache()
        self._cache = (q_split, k_split, v_split, sdpa_cache, merge_cache, cross)
        return context_vec

    def backward(self, dcontext_vec):
        """dx, or (dx, dx_kv) after a cross-attention forward."""
        q_split, k_split, v_split, sdpa_cache, merge_cache, cross = self._require_full_forward()
        # 7.
        dcontext = self.out_proj.backward(dcontext_vec)  # (B, T, d_out)
        # 6.
        dcontext = merge_heads_backward(dcontext, merge_cache)  # (B, H, T, E)
        # 5. a key/value head fed its whole group: the backward of whichever op ran (sdpa's or
        #    the tiled one) sums the group's gradients
        dqueries, dkeys, dvalues = attention_backward(dcontext, sdpa_cache)  # (B, H | G, ., E)
        # 2.
        dqueries = split_heads_backward(dqueries, q_split)  # (B, T, H * E)
        dkeys = split_heads_backward(dkeys, k_split)  # (B, S, G * E)
        dvalues = split_heads_backward(dvalues, v_split)  # (B, S, G * E)
        # 1. x (or x_kv) feeds several projections: their terms are summed
        dx = self.W_query.backward(dqueries)
        dsource = self.W_key.backward(dkeys)
        dsource += self.W_value.backward(dvalues)
        if cross:
            return dx, dsource
        dx += dsource
        return dx

    def extra_repr(self) -> str:
        return (
            f"d_in={self.d_in}, d_out={self.d_out}, dropout={self.dropout}, "
            f"num_heads={self.num_heads}, num_kv_groups={self.num_kv_groups}"
        )
