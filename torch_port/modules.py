"""The chapter's five attention classes as torch nn.Modules (ch. 3, sections 3.4-3.6).

Names, constructor arguments, initialisation order and state_dict keys are the chapter's, so
`torch.manual_seed(123)` gives the book's weights and state dicts load into npattn untouched.
Differences from the book, none of which changes a number:
- v1/v2 use `keys.transpose(-2, -1)` instead of `keys.T`, so (B, T, d_in) works as well;
- more tokens than context_length raise a ValueError naming the shape;
- each module keeps `attn_weights` (detached, before dropout) from its last forward, like npattn;
  that holds a (B, [H,] T, T) tensor between calls, so set `keep_attn_weights = False` (on a
  module or its class) where memory matters, e.g. in benchmarks;
- MultiHeadAttention also decodes with the KV cache of the book's ch. 4 bonus
  (`forward(x, use_cache=True)`, `reset_cache()`, torch_port.kv_cache), positions checked
  against context_length; without use_cache it is the chapter's forward.

Shape legend: B batch, T tokens, H = num_heads, E = head_dim, d_in / d_out as in the chapter.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .kv_cache import KVCacheMixin, append


class _KeepWeights(nn.Module):
    keep_attn_weights = True  # see the module docstring

    def _keep(self, attn_weights: torch.Tensor) -> None:
        self.attn_weights = attn_weights.detach() if self.keep_attn_weights else None


def _check_tokens(x: torch.Tensor, context_length: int) -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"x must be a torch tensor, got {type(x).__name__}")
    if x.dim() != 3 or x.shape[1] > context_length:
        raise ValueError(
            f"x must have shape (B, T <= context_length={context_length}, d_in), "
            f"got {tuple(x.shape)}"
        )


class SelfAttention_v1(_KeepWeights):
    """Self-attention with raw weight matrices, x @ W (chapter 3.4.2).

    Shapes: x (..., T, d_in) -> context_vec (..., T, d_out); W_* (d_in, d_out).
    """

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.W_query = nn.Parameter(torch.rand(d_in, d_out))
        self.W_key = nn.Parameter(torch.rand(d_in, d_out))
        self.W_value = nn.Parameter(torch.rand(d_in, d_out))
        self.attn_weights = None

    def forward(self, x):
        keys = x @ self.W_key  # (..., T, d_in) @ (d_in, d_out) -> (..., T, d_out)
        queries = x @ self.W_query  # (..., T, d_out)
        values = x @ self.W_value  # (..., T, d_out)
        attn_scores = queries @ keys.transpose(-2, -1)  # (..., T, d_out) @ (..., d_out, T)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)  # (..., T, T)
        self._keep(attn_weights)
        context_vec = attn_weights @ values  # (..., T, T) @ (..., T, d_out) -> (..., T, d_out)
        return context_vec


class SelfAttention_v2(_KeepWeights):
    """Self-attention with nn.Linear projections (chapter 3.4.2).

    Shapes: x (..., T, d_in) -> context_vec (..., T, d_out); W_*.weight (d_out, d_in).
    """

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False):
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.attn_weights = None

    def forward(self, x):
        keys = self.W_key(x)  # (..., T, d_in) -> (..., T, d_out)
        queries = self.W_query(x)  # (..., T, d_out)
        values = self.W_value(x)  # (..., T, d_out)
        attn_scores = queries @ keys.transpose(-2, -1)  # (..., T, d_out) @ (..., d_out, T)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)  # (..., T, T)
        self._keep(attn_weights)
        context_vec = attn_weights @ values  # (..., T, T) @ (..., T, d_out) -> (..., T, d_out)
        return context_vec


class CausalAttention(_KeepWeights):
    """Causal self-attention with dropout on the weights (chapter 3.5.3).

    Shapes: x (B, T, d_in), T <= context_length -> context_vec (B, T, d_out).
    Buffer `mask`: triu(ones(context_length, context_length), 1), 1 = masked (the chapter's).
    """

    def __init__(self, d_in, d_out, context_length, dropout, qkv_bias=False):
        super().__init__()
        self.d_in, self.d_out, self.context_length = d_in, d_out, context_length
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer(
            "mask", torch.triu(torch.ones(context_length, context_length), diagonal=1)
        )
        self.attn_weights = None

    def forward(self, x):
        _check_tokens(x, self.context_length)
        b, num_tokens, d_in = x.shape
        keys = self.W_key(x)  # (B, T, d_in) -> (B, T, d_out)
        queries = self.W_query(x)  # (B, T, d_out)
        values = self.W_value(x)  # (B, T, d_out)
        attn_scores = queries @ keys.transpose(1, 2)  # (B, T, d_out) @ (B, d_out, T) -> (B, T, T)
        masked = self.mask.bool()[:num_tokens, :num_tokens]  # (T, T), True = masked
        attn_scores = attn_scores.masked_fill(masked, -torch.inf)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)  # (B, T, T)
        self._keep(attn_weights)
        attn_weights = self.dropout(attn_weights)
        context_vec = attn_weights @ values  # (B, T, T) @ (B, T, d_out) -> (B, T, d_out)
        return context_vec


class MultiHeadAttentionWrapper(nn.Module):
    """num_heads CausalAttention heads, outputs concatenated (chapter 3.6.1).

    Shapes: x (B, T, d_in) -> (B, T, num_heads * d_out): d_out is per head here.
    """

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.heads = nn.ModuleList(
            [
                CausalAttention(d_in, d_out, context_length, dropout, qkv_bias)
                for _ in range(num_heads)
            ]
        )

    @property
    def attn_weights(self):
        """Each head's weights stacked on dim -3: (B, H, T, T), as npattn's wrapper does."""
        if any(h.attn_weights is None for h in self.heads):
            return None
        return torch.stack([h.attn_weights for h in self.heads], dim=-3)

    def forward(self, x):
        return torch.cat(
            [head(x) for head in self.heads], dim=-1
        )  # H x (B, T, d_out) -> (B, T, H * d_out)


class MultiHeadAttention(KVCacheMixin, _KeepWeights):
    """Multi-head attention with split weights and out_proj (chapter 3.6.2), with the KV cache
    of the book's ch. 4 bonus: forward(x, use_cache=True) appends, reset_cache() empties.

    Shapes: x (B, T, d_in), T <= context_length -> context_vec (B, T, d_out), E = d_out // H.
    Cache: cache_k, cache_v (B, H, S_cached, E), ptr_current_pos + T <= context_length.
    """

    empty_batch_ok = True  # as npattn's MultiHeadAttention: batch 0 gives (0, T, d_out)

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.d_in, self.context_length = d_in, context_length
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer(
            "mask", torch.triu(torch.ones(context_length, context_length), diagonal=1)
        )
        self.attn_weights = None
        self._init_cache()

    def forward(self, x, use_cache=False):
        _check_tokens(x, self.context_length)
        self._check_call(x, use_cache, None)
        b, num_tokens, d_in = x.shape
        start = self.ptr_current_pos if use_cache else 0
        if start + num_tokens > self.context_length:
            raise ValueError(
                f"positions {start}..{start + num_tokens - 1} run past "
                f"context_length={self.context_length}"
            )
        H, E = self.num_heads, self.head_dim
        keys = self.W_key(x)  # (B, T, d_in) -> (B, T, d_out)
        queries = self.W_query(x)  # (B, T, d_out)
        values = self.W_value(x)  # (B, T, d_out)
        keys = keys.view(b, num_tokens, H, E)  # (B, T, d_out) -> (B, T, H, E)
        values = values.view(b, num_tokens, H, E)  # (B, T, H, E)
        queries = queries.view(b, num_tokens, H, E)  # (B, T, H, E)
        keys = keys.transpose(1, 2)  # (B, T, H, E) -> (B, H, T, E)
        queries = queries.transpose(1, 2)  # (B, H, T, E)
        values = values.transpose(1, 2)  # (B, H, T, E)
        if use_cache:  # this chunk's keys and values join the cached ones: S = start + T
            keys = append(self.cache_k, keys, dim=2)  # (B, H, S, E)
            values = append(self.cache_v, values, dim=2)  # (B, H, S, E)
        attn_scores = queries @ keys.transpose(2, 3)  # (B, H, T, E) @ (B, H, E, S) -> (B, H, T, S)
        end = start + num_tokens
        mask_bool = self.mask.bool()[start:end, :end]  # (T, S), True = masked
        attn_scores = attn_scores.masked_fill(mask_bool, -torch.inf)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)  # (B, H, T, S)
        self._keep(attn_weights)
        attn_weights = self.dropout(attn_weights)
        context_vec = (attn_weights @ values).transpose(1, 2)  # (B, H, T, E) -> (B, T, H, E)
        context_vec = context_vec.contiguous().view(b, num_tokens, self.d_out)  # -> (B, T, d_out)
        context_vec = self.out_proj(context_vec)  # (B, T, d_out)
        self._commit(use_cache, num_tokens, cache_k=keys, cache_v=values)
        return context_vec
