"""Multi-head latent attention (MLA, DeepSeek-V2), the chapter 4 bonus class: keys and values
are up-projected from one small latent per token, and only the latent is cached.

Shape legend: B batch, T query tokens, S key tokens, H = num_heads, E = head_dim = d_out // H,
C = latent_dim, d_in / d_out as in the chapter.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_allocation, check_positive_int, make_rng
from ..ops.heads import (
    merge_heads_backward,
    merge_heads_forward,
    split_heads_backward,
    split_heads_forward,
)
from ..ops.sdpa import sdpa_backward, sdpa_forward
from ._input import check_attention_args
from ._kv import (
    CacheView,
    KVCacheMixin,
    attention_mask,
    check_key_padding_mask,
    check_scores,
    check_tokens,
)
from .base import Module
from .linear import Linear


class MultiHeadLatentAttention(KVCacheMixin, Module):
    """Causal attention whose keys and values come from a latent c_kv = W_DKV(x).

    Shapes: x (B, T, d_in) -> context_vec (B, T, d_out).

    Forward (walked backwards in `backward`):
        1. queries = W_query(x)                            (B, T, d_in) -> (B, T, d_out)
        2. c_kv = W_DKV(x)                                 (B, T, d_in) -> (B, T, C)
        3. cache: earlier chunks' latents in front (use_cache only; then steps 6-9 run
           forward only in _attend_cached, or 4-9 in latent space in _attend_absorbed when
           m.absorbed is True)                                             (B, S, C)
        4. keys, values = W_UK(c_kv), W_UV(c_kv)           (B, S, C) -> (B, S, d_out) each
        5. split heads                                     -> (B, H, T | S, E)
        6. mask: causal at absolute positions, & key padding  (T, S) or (B, 1, T, S)
        7. SDPA with dropout on the weights                (B, H, T, E)
        8. merge heads                                     (B, H, T, E) -> (B, T, d_out)
        9. context_vec = out_proj(context)                 (B, T, d_out)
    """

    _kv_names = ("cache_c_kv",)
    _kv_axis = 1  # (B, S, C)
    cache_c_kv = CacheView(0)  # (B, S_cached, C), a read-only view

    def __init__(
        self,
        d_in: int,
        d_out: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
        latent_dim: int | None = None,
        *,
        rng=None,
    ):
        super().__init__()
        self.d_in, self.d_out, _, self.dropout, self.num_heads = check_attention_args(
            d_in, d_out, dropout=dropout, num_heads=num_heads, qkv_bias=qkv_bias
        )
        self.latent_dim = (
            max(16, self.d_out // 8)
            if latent_dim is None
            else check_positive_int(latent_dim, "latent_dim")
        )
        C = self.latent_dim
        check_allocation((C, max(self.d_in, self.d_out)), 4, "latent_dim", "a float32 weight")
        self.head_dim = self.d_out // self.num_heads
        self.rng = make_rng(rng)
        self.W_query = Linear(d_in, d_out, bias=qkv_bias, rng=self.rng)
        self.W_DKV = Linear(d_in, C, bias=qkv_bias, rng=self.rng)  # down to the latent
        self.W_UK = Linear(C, d_out, bias=qkv_bias, rng=self.rng)  # latent -> keys
        self.W_UV = Linear(C, d_out, bias=qkv_bias, rng=self.rng)  # latent -> values
        self.out_proj = Linear(d_out, d_out, rng=self.rng)
        self.absorbed = False  # cached calls in latent space (_attend_absorbed); same numbers
        self.attn_weights = None
        self.dropout_mask = None
        self.reset_cache()

    def forward(self, x, use_cache: bool = False, *, key_padding_mask=None):
        x = check_tokens(x, self.d_in, self.dtype)
        B, T = x.shape[:2]
        use_cache = self._check_call(B, use_cache, key_padding_mask)
        check_scores(B, self.num_heads, T, self.ptr_current_pos * use_cache + T, x.dtype)
        kpm = None  # checked here, before any child layer runs (S = T in a full forward)
        if key_padding_mask is not None:
            kpm = check_key_padding_mask(key_padding_mask, B, T)
        # 1. queries                       (B, T, d_in) -> (B, T, d_out)
        queries = self.W_query(x)
        # 2. the latent                    (B, T, d_in) -> (B, T, C)
        c_kv = self.W_DKV(x)
        # 3. the cache: (B, S_cached, C) + (B, T, C) -> (B, S, C), this chunk written behind
        #    the cached latents (held once the call has succeeded)
        if use_cache:
            (c_kv,) = self._kv.stage(c_kv)
            if self.absorbed:  # 4.-9. in latent space: no keys or values are formed
                return self._attend_absorbed(queries, c_kv)
        S = c_kv.shape[1]
        # 4. up-projections                (B, S, C) -> (B, S, d_out) each
        keys = self.W_UK(c_kv)
        values = self.W_UV(c_kv)
        # 5. split heads                   (B, T | S, d_out) -> (B, H, T | S, E)
        queries, q_split = split_heads_forward(queries, self.num_heads)
        keys, k_split = split_heads_forward(keys, self.num_heads)
        values, v_split = split_heads_forward(values, self.num_heads)
        if use_cache:  # 6.-9. forward only, reading the cache in place; commits the latent
            return self._attend_cached(queries, keys, values)
        # 6. mask                          (T, S), or (B, 1, T, S) with key padding
        mask = attention_mask(0, T, 0, S, kpm=kpm)
        # 7. SDPA                          (B, H, T, E)
        dropout_p = self.dropout if self.training else 0.0
        context, sdpa_cache = sdpa_forward(queries, keys, values, mask, dropout_p, rng=self.rng)
        # 8. merge heads                   (B, H, T, E) -> (B, T, d_out)
        context, merge_cache = merge_heads_forward(context)
        # 9. output projection             (B, T, d_out) -> (B, T, d_out)
        context_vec = self.out_proj(context)
        self.attn_weights = sdpa_cache.attn_weights  # (B, H, T, S), before dropout
        self.dropout_mask = sdpa_cache.keep  # keep-mask, or None
        self.reset_cache()
        self._cache = (q_split, k_split, v_split, sdpa_cache, merge_cache)
        return context_vec

    def _attend_absorbed(self, queries, c_kv):
        """Steps 4-9 of a cached call with W_UK folded into the queries and W_UV into
        out_proj, so attention runs on the cached latents themselves (docs/modern/kv_cache.md).

        Shapes: queries (B, T, d_out), c_kv (B, S, C) (cached latents and this chunk's)
        -> context_vec (B, T, d_out).
        With k_j,h = W_UK,h c_j + b_UK,h and v_j,h = W_UV,h c_j + b_UV,h (W_UK,h, W_UV,h the
        (E, C) row blocks of head h):
            q_h . k_j,h = (W_UK,h^T q_h) . c_j + q_h . b_UK,h
            sum_j a_j v_j,h = W_UV,h (sum_j a_j c_j) + b_UV,h sum_j a_j
        The bias term q_h . b_UK,h is the same for every key j of a query row, and softmax
        is unchanged by adding a constant to a row, so it is left out.
        """
        B, T, _ = queries.shape
        H, E, C = self.num_heads, self.head_dim, self.latent_dim
        W_UK = self.W_UK.weight.reshape(H, E, C)  # (H * E, C) -> (H, E, C): head h's rows
        W_UV = self.W_UV.weight.reshape(H, E, C)
        # 4. W_UK folded into the queries: q_lat_h = W_UK,h^T q_h
        q_heads = queries.reshape(B, T, H, E).transpose(0, 2, 1, 3)  # (B, H, T, E)
        q_lat = q_heads @ W_UK  # (B, H, T, E) @ (H, E, C) -> (B, H, T, C)
        # 5.-7. attention on the latents: one latent "head" read by all H query heads, at the
        #    scale of the plain form (head dim E, not C)
        latent = c_kv[:, None]  # (B, S, C) -> (B, 1, S, C)
        context_lat, shown = self._cached_sdpa(q_lat, latent, latent, 1.0 / np.sqrt(E))
        attn_weights, keep = shown  # (B, H, T, S) each; context_lat (B, H, T, C)
        # 8. W_UV folded into out_proj: each head's value from its attended latent
        context = context_lat @ W_UV.swapaxes(-1, -2)  # (B, H, T, C) @ (H, C, E) -> (B,H,T,E)
        if self.W_UV.bias is not None:  # b_UV,h times the row's weight sum (1 without dropout)
            weight_sum = 1.0
            if keep is not None:
                # dropout's kept-value scale; p = 1 drops every weight (sdpa_forward's rule)
                keep_scale = 1.0 / (1.0 - self.dropout) if self.dropout < 1.0 else 0.0
                weight_sum = (attn_weights * keep).sum(-1, keepdims=True)
                weight_sum *= keep_scale  # (B, H, T, 1)
            context = context + self.W_UV.bias.reshape(H, 1, E) * weight_sum
        # 9. merge heads, out_proj, commit the latent
        return self._finish_cached(context.astype(queries.dtype, copy=False), shown)

    def backward(self, dcontext_vec):
        q_split, k_split, v_split, sdpa_cache, merge_cache = self._require_full_forward()
        # 9.
        dcontext = self.out_proj.backward(dcontext_vec)  # (B, T, d_out)
        # 8.
        dcontext = merge_heads_backward(dcontext, merge_cache)  # (B, H, T, E)
        # 7.
        dqueries, dkeys, dvalues = sdpa_backward(dcontext, sdpa_cache)  # (B, H, T, E) each
        # 5.
        dqueries = split_heads_backward(dqueries, q_split)  # (B, T, d_out)
        dkeys = split_heads_backward(dkeys, k_split)  # (B, S, d_out)
        dvalues = split_heads_backward(dvalues, v_split)  # (B, S, d_out)
        # 4. the latent feeds both up-projections: their terms are summed
        dc_kv = self.W_UK.backward(dkeys)  # (B, S, C)
        dc_kv += self.W_UV.backward(dvalues)
        # 2. and 1. x feeds the latent and the queries
        dx = self.W_DKV.backward(dc_kv)  # (B, T, d_in)
        dx += self.W_query.backward(dqueries)
        return dx

    def extra_repr(self) -> str:
        return (
            f"d_in={self.d_in}, d_out={self.d_out}, dropout={self.dropout}, "
            f"num_heads={self.num_heads}, latent_dim={self.latent_dim}"
        )
