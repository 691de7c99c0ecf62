"""Qwen3's attention (the book's pkg qwen3.py) as a torch nn.Module, with a KV cache:
grouped-query attention, optional QK-norm (RMSNorm per head), split-halves RoPE at the
absolute position, causal, no bias, no dropout. With qk_norm=False and rope_base=500_000.0
it is Llama 3's attention; rope_freq_config adds Llama 3.1's frequency scaling.

Shape legend: B batch, T query tokens, S key tokens, H heads, G key/value heads,
E = head_dim, D = H * E.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .kv_cache import KVCacheMixin, append, attention_weights, position_keep, with_padding
from .modules import _KeepWeights
from .rope import apply_rope, compute_rope_params


class RMSNorm(nn.Module):
    """x * (offset + scale) / sqrt(mean(x^2) + eps) over the last axis (Gemma: offset 1).

    Computed in float32 for every input dtype below float32, as the book does, and in float64
    for float64 input (so float64 stays exact); the result has the input's dtype.
    Shapes: x (..., emb_dim) -> (..., emb_dim); scale (emb_dim,), ones at init when offset is
    0, zeros otherwise.
    """

    def __init__(self, emb_dim: int, eps: float = 1e-6, *, offset: float = 0.0, dtype=None):
        super().__init__()
        if isinstance(offset, bool) or not isinstance(offset, (int, float)):
            raise TypeError(f"offset must be a float, got {offset!r}")
        if not math.isfinite(offset):
            raise ValueError(f"offset must be finite, got {offset}")
        self.eps, self.offset = eps, float(offset)
        init = torch.ones if self.offset == 0 else torch.zeros
        self.scale = nn.Parameter(init(emb_dim, dtype=dtype))

    def forward(self, x):
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        xc = x.to(compute)
        variance = xc.pow(2).mean(dim=-1, keepdim=True)  # (..., 1)
        norm_x = xc * torch.rsqrt(variance + self.eps)  # (..., emb_dim)
        gain = self.scale if self.offset == 0 else self.offset + self.scale
        return (norm_x * gain).to(x.dtype)


class Qwen3Attention(KVCacheMixin, _KeepWeights):
    """Qwen3 attention: GQA with QK-norm before RoPE; out_proj maps D back to d_in.

    Shapes: x (B, T, d_in), ptr_current_pos + T <= context_length -> (B, T, d_in).
    Cache: cache_k (after RoPE), cache_v (B, G, S_cached, E). cos, sin (context_length, E) are
    float64 attributes, not buffers: cast to x's dtype per call, never in the state_dict.
    """

    def __init__(
        self,
        d_in,
        num_heads,
        num_kv_groups,
        head_dim=None,
        qk_norm=True,
        *,
        rope_base=1_000_000.0,
        context_length=4096,
        rope_freq_config=None,
        dtype=None,
    ):
        super().__init__()
        if num_heads % num_kv_groups:
            raise ValueError(
                f"num_heads ({num_heads}) must be divisible by num_kv_groups ({num_kv_groups})"
            )
        if head_dim is None:
            if d_in % num_heads:
                raise ValueError(
                    f"d_in ({d_in}) must be divisible by num_heads ({num_heads}) "
                    "when head_dim is not given"
                )
            head_dim = d_in // num_heads
        self.d_in = d_in
        self.num_heads, self.num_kv_groups = num_heads, num_kv_groups
        self.group_size = num_heads // num_kv_groups
        self.head_dim = head_dim
        self.d_out = num_heads * head_dim
        self.W_query = nn.Linear(d_in, self.d_out, bias=False, dtype=dtype)
        self.W_key = nn.Linear(d_in, num_kv_groups * head_dim, bias=False, dtype=dtype)
        self.W_value = nn.Linear(d_in, num_kv_groups * head_dim, bias=False, dtype=dtype)
        self.out_proj = nn.Linear(self.d_out, d_in, bias=False, dtype=dtype)
        if qk_norm:
            self.q_norm = RMSNorm(head_dim, eps=1e-6, dtype=dtype)
            self.k_norm = RMSNorm(head_dim, eps=1e-6, dtype=dtype)
        else:
            self.q_norm = self.k_norm = None
        self.rope_base, self.context_length = rope_base, context_length
        self.rope_freq_config = None if rope_freq_config is None else dict(rope_freq_config)
        self.cos, self.sin = compute_rope_params(
            head_dim, rope_base, context_length, self.rope_freq_config
        )  # (context_length, E) each, float64
        self.attn_weights = None
        self._init_cache()

    def forward(self, x, use_cache=False, *, key_padding_mask=None):
        """Causal self-attention; key_padding_mask (B, S), True = attend, without the cache."""
        self._check_call(x, use_cache, key_padding_mask)
        b, num_tokens, _ = x.shape
        start = self.ptr_current_pos if use_cache else 0
        if start + num_tokens > self.context_length:
            raise ValueError(
                f"positions {start}..{start + num_tokens - 1} run past "
                f"context_length={self.context_length}"
            )
        H, G, E = self.num_heads, self.num_kv_groups, self.head_dim
        queries = self.W_query(x)  # (B, T, d_in) -> (B, T, D)
        keys_new = self.W_key(x)  # (B, T, G * E)
        values_new = self.W_value(x)  # (B, T, G * E)
        queries = queries.view(b, num_tokens, H, E).transpose(1, 2)  # -> (B, H, T, E)
        keys_new = keys_new.view(b, num_tokens, G, E).transpose(1, 2)  # -> (B, G, T, E)
        values_new = values_new.view(b, num_tokens, G, E).transpose(1, 2)  # -> (B, G, T, E)
        if self.q_norm is not None:  # QK-norm, per head, before RoPE
            queries = self.q_norm(queries)
            keys_new = self.k_norm(keys_new)
        cos = self.cos[start : start + num_tokens].to(queries)  # (T, E), absolute positions
        sin = self.sin[start : start + num_tokens].to(queries)
        queries = apply_rope(queries, cos, sin)  # (B, H, T, E)
        keys_new = apply_rope(keys_new, cos, sin)  # (B, G, T, E)

        if use_cache:
            keys_base = append(self.cache_k, keys_new, dim=2)  # (B, G, S, E)
            values_base = append(self.cache_v, values_new, dim=2)
        else:
            keys_base, values_base = keys_new, values_new
        keys = keys_base.repeat_interleave(self.group_size, dim=1)  # (B, G, S, E) -> (B, H, S, E)
        values = values_base.repeat_interleave(self.group_size, dim=1)  # (B, H, S, E)

        q_pos = torch.arange(start, start + num_tokens, device=x.device)  # (T,)
        keep = position_keep(q_pos, torch.arange(keys.shape[2], device=x.device))  # (T, S)
        keep = with_padding(keep, key_padding_mask)  # (B or 1, 1, T, S)

        attn_scores = queries @ keys.transpose(2, 3)  # (B, H, T, E) @ (B, H, E, S) -> (B, H, T, S)
        attn_weights = attention_weights(attn_scores, keep, E)  # (B, H, T, S)
        self._keep(attn_weights)
        context_vec = (attn_weights @ values).transpose(1, 2)  # (B, H, T, E) -> (B, T, H, E)
        context_vec = context_vec.reshape(b, num_tokens, self.d_out)  # (B, T, D)
        context_vec = self.out_proj(context_vec)  # (B, T, D) -> (B, T, d_in)
        self._commit(use_cache, num_tokens, cache_k=keys_base, cache_v=values_base)
        return context_vec
