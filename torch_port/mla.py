"""Multi-head latent attention (the book's ch. 4 bonus, after DeepSeek-V2) as a torch
nn.Module, with a cache that holds only the latent.

Keys and values come from one small latent per token, c_kv = W_DKV x (latent_dim numbers),
up-projected per head by W_UK and W_UV. The cache keeps c_kv, not the keys and values.

Shape legend: B batch, T query tokens, S key tokens, H heads, E = head_dim = d_out // H,
C = latent_dim.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .kv_cache import KVCacheMixin, append, attention_weights, position_keep, with_padding
from .modules import _KeepWeights


class MultiHeadLatentAttention(KVCacheMixin, _KeepWeights):
    """Causal multi-head attention whose keys and values are up-projected from a latent.

    Shapes: x (B, T, d_in) -> context_vec (B, T, d_out). Cache: cache_c_kv (B, S_cached, C).
    latent_dim defaults to max(16, d_out // 8); qkv_bias applies to W_query, W_DKV, W_UK, W_UV.
    """

    CACHE_NAMES = ("cache_c_kv",)

    def __init__(
        self, d_in, d_out, dropout, num_heads, qkv_bias=False, latent_dim=None, *, dtype=None
    ):
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.d_in, self.d_out = d_in, d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.latent_dim = latent_dim if latent_dim is not None else max(16, d_out // 8)
        C = self.latent_dim
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias, dtype=dtype)  # per-head queries
        self.W_DKV = nn.Linear(d_in, C, bias=qkv_bias, dtype=dtype)  # down to the latent
        self.W_UK = nn.Linear(C, d_out, bias=qkv_bias, dtype=dtype)  # latent -> keys
        self.W_UV = nn.Linear(C, d_out, bias=qkv_bias, dtype=dtype)  # latent -> values
        self.out_proj = nn.Linear(d_out, d_out, dtype=dtype)
        self.dropout = nn.Dropout(dropout)
        self.attn_weights = None
        self._init_cache()

    def forward(self, x, use_cache=False, *, key_padding_mask=None):
        """Causal self-attention; key_padding_mask (B, S), True = attend, without the cache."""
        self._check_call(x, use_cache, key_padding_mask)
        b, num_tokens, _ = x.shape
        H, E = self.num_heads, self.head_dim
        queries = self.W_query(x)  # (B, T, d_in) -> (B, T, d_out)
        latent_new = self.W_DKV(x)  # (B, T, d_in) -> (B, T, C)
        start = self.ptr_current_pos if use_cache else 0
        latent = append(self.cache_c_kv, latent_new, dim=1) if use_cache else latent_new  # (B,S,C)

        keys = self.W_UK(latent)  # (B, S, C) -> (B, S, d_out)
        values = self.W_UV(latent)  # (B, S, d_out)
        queries = queries.view(b, num_tokens, H, E).transpose(1, 2)  # -> (B, H, T, E)
        keys = keys.view(b, -1, H, E).transpose(1, 2)  # (B, S, d_out) -> (B, H, S, E)
        values = values.view(b, -1, H, E).transpose(1, 2)  # (B, H, S, E)

        q_pos = torch.arange(start, start + num_tokens, device=x.device)  # (T,)
        keep = position_keep(q_pos, torch.arange(keys.shape[2], device=x.device))  # (T, S)
        keep = with_padding(keep, key_padding_mask)  # (B or 1, 1, T, S)

        attn_scores = queries @ keys.transpose(2, 3)  # (B, H, T, E) @ (B, H, E, S) -> (B, H, T, S)
        attn_weights = attention_weights(attn_scores, keep, E)  # (B, H, T, S)
        self._keep(attn_weights)
        attn_weights = self.dropout(attn_weights)
        context_vec = (attn_weights @ values).transpose(1, 2)  # (B, H, T, E) -> (B, T, H, E)
        context_vec = context_vec.contiguous().view(b, num_tokens, self.d_out)  # (B, T, d_out)
        context_vec = self.out_proj(context_vec)  # (B, T, d_out)
        self._commit(use_cache, num_tokens, cache_c_kv=latent)
        return context_vec
