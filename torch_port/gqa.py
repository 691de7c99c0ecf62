"""Grouped-query attention (the book's ch. 4 bonus) as a torch nn.Module, with a KV cache.

G = num_kv_groups key/value heads are shared by H = num_heads query heads, H / G each:
G = 1 is multi-query attention, G = H is multi-head attention. Shared heads are repeated with
repeat_interleave, so the heads read [K1, K1, K2, K2] (not [K1, K2, K1, K2]).

Shape legend: B batch, T query tokens, S key tokens, H heads, G key/value heads,
E = head_dim = d_out // H.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .kv_cache import KVCacheMixin, append, attention_weights, position_keep, with_padding
from .modules import _KeepWeights


class GroupedQueryAttention(KVCacheMixin, _KeepWeights):
    """Causal grouped-query attention; out_proj has no bias.

    Shapes: x (B, T, d_in) [, x_kv (B, S, d_in)] -> context_vec (B, T, d_out).
    Cache: cache_k, cache_v (B, G, S_cached, E), only G heads.
    """

    def __init__(
        self, d_in, d_out, dropout, num_heads, num_kv_groups, qkv_bias=False, *, dtype=None
    ):
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        if num_heads % num_kv_groups:
            raise ValueError(
                f"num_heads ({num_heads}) must be divisible by num_kv_groups ({num_kv_groups})"
            )
        self.d_in, self.d_out = d_in, d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        # Creation order is the book's (W_key, W_value, W_query, out_proj): the same seed
        # gives the same weights and the state_dict keys come in the same order.
        self.W_key = nn.Linear(d_in, num_kv_groups * self.head_dim, bias=qkv_bias, dtype=dtype)
        self.W_value = nn.Linear(d_in, num_kv_groups * self.head_dim, bias=qkv_bias, dtype=dtype)
        self.num_kv_groups = num_kv_groups
        self.group_size = num_heads // num_kv_groups
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias, dtype=dtype)
        self.out_proj = nn.Linear(d_out, d_out, bias=False, dtype=dtype)
        self.dropout = nn.Dropout(dropout)
        self.attn_weights = None
        self._init_cache()

    def forward(self, x, use_cache=False, *, key_padding_mask=None, x_kv=None):
        """Causal self-attention over x, or (x_kv given) bidirectional cross-attention.

        key_padding_mask (B, S), True = attend; x_kv and key_padding_mask need use_cache=False.
        """
        if x_kv is not None and use_cache:
            raise ValueError("x_kv (cross-attention) is only allowed with use_cache=False")
        self._check_call(x, use_cache, key_padding_mask, x_kv)
        source = x if x_kv is None else x_kv
        b, num_tokens, _ = x.shape
        H, G, E = self.num_heads, self.num_kv_groups, self.head_dim
        queries = self.W_query(x)  # (B, T, d_in) -> (B, T, H * E)
        keys_new = self.W_key(source)  # (B, S_new, d_in) -> (B, S_new, G * E)
        values_new = self.W_value(source)  # (B, S_new, G * E)
        queries = queries.view(b, num_tokens, H, E).transpose(1, 2)  # -> (B, H, T, E)
        keys_new = keys_new.view(b, -1, G, E).transpose(1, 2)  # -> (B, G, S_new, E)
        values_new = values_new.view(b, -1, G, E).transpose(1, 2)  # -> (B, G, S_new, E)

        start = self.ptr_current_pos if use_cache else 0
        if use_cache:  # this chunk's keys and values join the cached ones
            keys_base = append(self.cache_k, keys_new, dim=2)  # (B, G, S, E)
            values_base = append(self.cache_v, values_new, dim=2)  # (B, G, S, E)
        else:
            keys_base, values_base = keys_new, values_new
        keys = keys_base.repeat_interleave(self.group_size, dim=1)  # (B, G, S, E) -> (B, H, S, E)
        values = values_base.repeat_interleave(self.group_size, dim=1)  # (B, H, S, E)

        num_keys = keys.shape[2]
        if x_kv is None:  # causal, from absolute positions
            q_pos = torch.arange(start, start + num_tokens, device=x.device)  # (T,)
            keep = position_keep(q_pos, torch.arange(num_keys, device=x.device))  # (T, S)
        else:  # cross-attention: every query sees every key
            keep = torch.ones(num_tokens, num_keys, dtype=torch.bool, device=x.device)
        keep = with_padding(keep, key_padding_mask)  # (B or 1, 1, T, S)

        attn_scores = queries @ keys.transpose(2, 3)  # (B, H, T, E) @ (B, H, E, S) -> (B, H, T, S)
        attn_weights = attention_weights(attn_scores, keep, E)  # (B, H, T, S)
        self._keep(attn_weights)
        attn_weights = self.dropout(attn_weights)
        context_vec = (attn_weights @ values).transpose(1, 2)  # (B, H, T, E) -> (B, T, H, E)
        context_vec = context_vec.contiguous().view(b, num_tokens, self.d_out)  # (B, T, d_out)
        context_vec = self.out_proj(context_vec)  # (B, T, d_out)
        self._commit(use_cache, num_tokens, cache_k=keys_base, cache_v=values_base)
        return context_vec
