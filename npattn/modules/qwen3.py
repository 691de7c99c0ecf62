"""Qwen3's attention (and, with qk_norm=False and rope_base=500_000, Llama 3's): grouped-query
attention with RMSNorm on each head's queries and keys (QK-norm), then RoPE.

Shape legend: B batch, T query tokens, S key tokens, H = num_heads, G = num_kv_groups,
E = head_dim (d_in // H by default; even, for RoPE), d_in the model width.
"""

from __future__ import annotations

from .._checks import (
    check_allocation,
    check_bool,
    check_positive_int,
    check_real,
    make_rng,
)
from ..fast.dispatch import MODERN_ATTN_IMPLS, attention_backward
from ..fast.modern_tiled import tiled_attention_forward
from ..ops.heads import (
    merge_heads_backward,
    merge_heads_forward,
    split_heads_backward,
    split_heads_forward,
)
from ..ops.rope import compute_rope_params, rope_backward, rope_forward
from ..ops.sdpa import sdpa_forward
from ._input import attn_impl_property
from ._kv import CacheView, KVCacheMixin, attention_mask, check_key_padding_mask, check_tokens
from .base import Module
from .linear import Linear
from .rmsnorm import RMSNorm

QK_NORM_EPS = 1e-6


class Qwen3Attention(KVCacheMixin, Module):
    """Causal GQA with QK-norm and split-halves RoPE at absolute positions; no biases, no
    dropout. cos and sin for context_length positions are computed at construction (float64,
    cast to the compute dtype when used) and are not in the state_dict.

    Shapes: x (B, T, d_in), positions < context_length -> out (B, T, d_in).

    Forward (walked backwards in `backward`):
        1. queries, keys, values = W_query(x), W_key(x), W_value(x)
                                               (B, T, H * E); (B, T, G * E) each
        2. split heads                         (B, H, T, E); (B, G, T, E) each
        3. queries, keys = q_norm(queries), k_norm(keys): RMSNorm over E (qk_norm only)
        4. RoPE at positions ptr_current_pos .. ptr_current_pos + T - 1
        5. cache: earlier chunks' keys (after RoPE) and values in front (use_cache only; then
           steps 6-9 run forward only in _attend_cached, reading the cache in place)
        6. mask: causal at absolute positions, & key padding      (T, S) or (B, 1, T, S)
        7. SDPA, each key/value head repeated for its group       (B, H, T, E)
        8. merge heads                         (B, H, T, E) -> (B, T, H * E)
        9. out = out_proj(context)             (B, T, H * E) -> (B, T, d_in)

    attn_impl: "reference" (the default: the steps above), or the opt-in "tiled", which runs
    steps 6-7 as flash_attention_forward (npattn/fast/modern_tiled.py): the causal mask and
    the key padding are passed as is_causal (or a window of T) and a (B, 1, 1, S) mask, so no
    (B, H, T, S) weights and no (T, S) mask are formed: memory linear in T. The numbers are
    the reference's; attn_weights is None. The KV-cache path (use_cache=True) runs as above
    whatever attn_impl says.
    """

    attn_impl = attn_impl_property(MODERN_ATTN_IMPLS)  # npattn/fast/dispatch.py
    cache_k, cache_v = CacheView(0), CacheView(1)  # (B, G, S_cached, E), read-only views

    def __init__(
        self,
        d_in: int,
        num_heads: int,
        num_kv_groups: int,
        head_dim: int | None = None,
        qk_norm: bool = True,
        *,
        rope_base: float = 1_000_000.0,
        context_length: int = 4096,
        rope_freq_config=None,
        rng=None,
        attn_impl: str = "reference",
    ):
        super().__init__()
        self.attn_impl = attn_impl
        self.d_in = check_positive_int(d_in, "d_in")
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.num_kv_groups = check_positive_int(num_kv_groups, "num_kv_groups")
        if self.num_heads % self.num_kv_groups:
            raise ValueError(
                f"num_heads ({num_heads}) must be divisible by num_kv_groups ({num_kv_groups})"
            )
        if head_dim is None:
            if self.d_in % self.num_heads:
                raise ValueError(
                    f"d_in ({d_in}) must be divisible by num_heads ({num_heads}) when "
                    f"head_dim is not given"
                )
            head_dim = self.d_in // self.num_heads
        self.head_dim = check_positive_int(head_dim, "head_dim")
        self.context_length = check_positive_int(context_length, "context_length")
        self.group_size = self.num_heads // self.num_kv_groups
        self.d_out = self.num_heads * self.head_dim
        shape = (self.d_out, max(self.d_in, self.d_out))  # the largest weight
        check_allocation(shape, 4, "num_heads, head_dim, d_in", "a float32 weight")
        self.rope_base = check_real(rope_base, "rope_base", "a float > 0")
        if not self.rope_base > 0:
            raise ValueError(f"rope_base must be > 0, got {self.rope_base}")
        # cos, sin: (context_length, head_dim); also checks that head_dim is even
        self.cos, self.sin = compute_rope_params(
            self.head_dim, self.rope_base, self.context_length, rope_freq_config
        )
        self.rope_freq_config = None if rope_freq_config is None else dict(rope_freq_config)
        self.rng = make_rng(rng)
        kv_width = self.num_kv_groups * self.head_dim
        self.W_query = Linear(d_in, self.d_out, bias=False, rng=self.rng)
        self.W_key = Linear(d_in, kv_width, bias=False, rng=self.rng)
        self.W_value = Linear(d_in, kv_width, bias=False, rng=self.rng)
        self.out_proj = Linear(self.d_out, d_in, bias=False, rng=self.rng)
        if check_bool(qk_norm, "qk_norm"):
            self.q_norm = RMSNorm(self.head_dim, eps=QK_NORM_EPS)
            self.k_norm = RMSNorm(self.head_dim, eps=QK_NORM_EPS)
        else:
            self.q_norm = self.k_norm = None
        self.attn_weights = None
        self.dropout_mask = None  # no dropout in Qwen3: always None
        self.reset_cache()

    def _kv_limits(self) -> tuple:
        return None, self.context_length  # positions never exceed context_length

    def forward(self, x, use_cache: bool = False, *, key_padding_mask=None):
        x = check_tokens(x, self.d_in, self.dtype)
        B, T = x.shape[:2]
        use_cache = self._check_call(B, use_cache, key_padding_mask)
        start = self.ptr_current_pos if use_cache else 0
        if start + T > self.context_length:
            raise ValueError(
                f"positions {start}..{start + T - 1} run past context_length="
                f"{self.context_length}: x has {T} tokens after {start} cached ones"
            )
        # 1. projections                   (B, T, d_in) -> (B, T, H * E); (B, T, G * E) each
        queries = self.W_query(x)
        keys = self.W_key(x)
        values = self.W_value(x)
        # 2. split heads                   -> (B, H, T, E); (B, G, T, E) each
        queries, q_split = split_heads_forward(queries, self.num_heads)
        keys, k_split = split_heads_forward(keys, self.num_kv_groups)
        values, v_split = split_heads_forward(values, self.num_kv_groups)
        # 3. QK-norm: RMSNorm over each head's E dims
        if self.q_norm is not None:
            queries = self.q_norm(queries)
            keys = self.k_norm(keys)
        # 4. RoPE at the absolute positions start .. start + T - 1
        queries, q_rope = rope_forward(queries, self.cos, self.sin, start)
        keys, k_rope = rope_forward(keys, self.cos, self.sin, start)
        # 5. the cache: (B, G, S_cached, E) + (B, G, T, E) -> (B, G, S, E)
        if use_cache:
            return self._attend_cached(queries, *self._kv.stage(keys, values))
        S = keys.shape[2]
        # 6. mask                          (T, S), or (B, 1, T, S) with key padding
        kpm = None if key_padding_mask is None else check_key_padding_mask(key_padding_mask, B, S)
        if self.attn_impl == "tiled":  # 6.-7. opt-in, no (T, S) array: fast/modern_tiled.py
            context, sdpa_cache = tiled_attention_forward(
                queries, keys, values, kpm, enable_gqa=True
            )
        else:
            mask = attention_mask(0, T, 0, S, kpm=kpm)
            # 7. SDPA with GQA             (B, H, T, E)
            context, sdpa_cache = sdpa_forward(queries, keys, values, mask, enable_gqa=True)
        # 8. merge heads                   (B, H, T, E) -> (B, T, H * E)
        context, merge_cache = merge_heads_forward(context)
        # 9. output projection             (B, T, H * E) -> (B, T, d_in)
        out = self.out_proj(context)
        reference = self.attn_impl == "reference"
        self.attn_weights = sdpa_cache.attn_weights if reference else None  # (B, H, T, S)
        self.reset_cache()
        self._cache = (q_split, k_split, v_split, q_rope, k_rope, sdpa_cache, merge_cache)
        return out

    def backward(self, dout):
        q_split, k_split, v_split, q_rope, k_rope, sdpa_cache, merge_cache = (
            self._require_full_forward()
        )
        # 9.
        dcontext = self.out_proj.backward(dout)  # (B, T, H * E)
        # 8.
        dcontext = merge_heads_backward(dcontext, merge_cache)  # (B, H, T, E)
        # 7. a key/value head fed its whole group: sdpa_backward sums the group's gradients
        dqueries, dkeys, dvalues = attention_backward(dcontext, sdpa_cache)  # sdpa's or tiled
        # 4. RoPE's backward: the rotation by -theta
        dqueries = rope_backward(dqueries, q_rope)  # (B, H, T, E)
        dkeys = rope_backward(dkeys, k_rope)  # (B, G, T, E)
        # 3.
        if self.q_norm is not None:
            dqueries = self.q_norm.backward(dqueries)
            dkeys = self.k_norm.backward(dkeys)
        # 2.
        dqueries = split_heads_backward(dqueries, q_split)  # (B, T, H * E)
        dkeys = split_heads_backward(dkeys, k_split)  # (B, T, G * E)
        dvalues = split_heads_backward(dvalues, v_split)  # (B, T, G * E)
        # 1. x feeds all three projections: their terms of dx are summed
        dx = self.W_query.backward(dqueries)
        dx += self.W_key.backward(dkeys)
        dx += self.W_value.backward(dvalues)
        return dx

    def extra_repr(self) -> str:
        return (
            f"d_in={self.d_in}, num_heads={self.num_heads}, num_kv_groups="
            f"{self.num_kv_groups}, head_dim={self.head_dim}, qk_norm={self.q_norm is not None}"
        )
