"""Multi-head attention with a sliding window (the book's ch. 4 bonus) as a torch nn.Module,
with a KV cache bounded by the window.

Query i attends key j iff 0 <= i - j < W, W = sliding_window_size (None: plain causal). The
cache keeps the last W positions after each call; a chunk of n tokens attends to the last
W + n - 1 keys at most (its first query needs W - 1 older keys).

Shape legend: B batch, T query tokens, S key tokens, H heads, E = head_dim = d_out // H,
W = sliding_window_size.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .kv_cache import KVCacheMixin, append, attention_weights, position_keep, with_padding
from .modules import _KeepWeights


class MultiHeadAttentionWithSWA(KVCacheMixin, _KeepWeights):
    """The chapter's multi-head attention, causal within a sliding window; no mask buffer.

    Shapes: x (B, T, d_in) -> context_vec (B, T, d_out). Cache: cache_k, cache_v
    (B, H, S_cached, E), S_cached <= W.
    """

    def __init__(
        self,
        d_in,
        d_out,
        dropout,
        num_heads,
        qkv_bias=False,
        sliding_window_size=None,
        *,
        dtype=None,
    ):
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        if sliding_window_size is not None and (
            isinstance(sliding_window_size, bool)
            or not isinstance(sliding_window_size, int)
            or sliding_window_size < 1
        ):
            raise ValueError(
                f"sliding_window_size must be None or an int >= 1, got {sliding_window_size!r}"
            )
        self.d_in, self.d_out = d_in, d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias, dtype=dtype)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias, dtype=dtype)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias, dtype=dtype)
        self.out_proj = nn.Linear(d_out, d_out, dtype=dtype)
        self.dropout = nn.Dropout(dropout)
        self.sliding_window_size = sliding_window_size
        self.attn_weights = None
        self._init_cache()

    def forward(self, x, use_cache=False, *, key_padding_mask=None):
        """Sliding-window causal self-attention; key_padding_mask (B, S) without the cache."""
        self._check_call(x, use_cache, key_padding_mask)
        b, num_tokens, _ = x.shape
        H, E, W = self.num_heads, self.head_dim, self.sliding_window_size
        queries = self.W_query(x)  # (B, T, d_in) -> (B, T, d_out)
        keys_new = self.W_key(x)  # (B, T, d_out)
        values_new = self.W_value(x)  # (B, T, d_out)
        queries = queries.view(b, num_tokens, H, E).transpose(1, 2)  # -> (B, H, T, E)
        keys_new = keys_new.view(b, num_tokens, H, E).transpose(1, 2)  # -> (B, H, T, E)
        values_new = values_new.view(b, num_tokens, H, E).transpose(1, 2)  # -> (B, H, T, E)

        start = self.ptr_current_pos if use_cache else 0
        if use_cache:
            old_len = 0 if self.cache_k is None else self.cache_k.shape[2]
            keys = append(self.cache_k, keys_new, dim=2)  # (B, H, old_len + T, E)
            values = append(self.cache_v, values_new, dim=2)
            k_start = start - old_len  # absolute position of keys[:, :, 0]
            cache_k, cache_v = keys, values
            if W is not None and keys.shape[2] > W:  # keep the last W positions, as copies
                cache_k, cache_v = keys[:, :, -W:].clone(), values[:, :, -W:].clone()
            if W is not None:  # the chunk needs at most W - 1 keys before its first query
                attn_len = min(keys.shape[2], W + num_tokens - 1)
                k_start += keys.shape[2] - attn_len
                keys, values = keys[:, :, -attn_len:], values[:, :, -attn_len:]  # (B,H,S,E)
        else:
            keys, values, k_start = keys_new, values_new, 0

        q_pos = torch.arange(start, start + num_tokens, device=x.device)  # (T,)
        k_pos = torch.arange(k_start, k_start + keys.shape[2], device=x.device)  # (S,)
        keep = with_padding(position_keep(q_pos, k_pos, W), key_padding_mask)  # (., 1, T, S)

        attn_scores = queries @ keys.transpose(2, 3)  # (B, H, T, E) @ (B, H, E, S) -> (B, H, T, S)
        attn_weights = attention_weights(attn_scores, keep, E)  # (B, H, T, S)
        self._keep(attn_weights)
        attn_weights = self.dropout(attn_weights)
        context_vec = (attn_weights @ values).transpose(1, 2)  # (B, H, T, E) -> (B, T, H, E)
        context_vec = context_vec.contiguous().view(b, num_tokens, self.d_out)  # (B, T, d_out)
        context_vec = self.out_proj(context_vec)  # (B, T, d_out)
        if use_cache:
            self._commit(True, num_tokens, cache_k=cache_k, cache_v=cache_v)
        else:
            self._commit(False, num_tokens)
        return context_vec
