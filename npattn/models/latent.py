"""DeepSeek-V2/V3's multi-head latent attention (MLA) with decoupled RoPE: keys and values
are up-projected per head from one small latent per token, and a single rotated "rope key"
is shared by all heads; the KV cache holds only the latent and the rope key.

Shape legend: B batch, T query tokens, S key tokens, H = num_heads, C = kv_lora_rank,
Cq = q_lora_rank, Dn = qk_nope_head_dim, Dr = qk_rope_head_dim, Dq = Dn + Dr,
Dv = v_head_dim, d = hidden_size.

State dict keys and transformers' DeepseekV3Attention (and DeepseekV2Attention) names:
    W_query.weight      q_proj.weight  (no bias)     (q_lora_rank None)   (H * Dq, d)
    W_q_down.weight     q_a_proj.weight  (+ .bias)   (q_lora_rank set)    (Cq, d)
    q_norm.scale        q_a_layernorm.weight                              (Cq,)
    W_q_up.weight       q_b_proj.weight                                   (H * Dq, Cq)
    W_kv_down.weight    kv_a_proj_with_mqa.weight  (+ .bias)              (C + Dr, d)
    kv_norm.scale       kv_a_layernorm.weight                             (C,)
    W_kv_up.weight      kv_b_proj.weight                                  (H * (Dn + Dv), C)
    out_proj.weight     o_proj.weight  (+ .bias)                          (d, H * Dv)
The arrays are the same, in the same layout: each head's rows of W_query / W_q_up are
[nope; rope], of W_kv_up [k_nope; value], and W_kv_down's rows are [latent; rope key].
"""

from __future__ import annotations

import numpy as np

from .. import _guard
from .._checks import make_rng
from ..fast.grouped import grouped_attention
from ..modules._kv import (
    KVCacheMixin,
    attention_mask,
    check_key_padding_mask,
    check_positions,
    check_scores,
    check_tokens,
)
from ..modules.base import Module
from ..modules.linear import Linear
from ..modules.rmsnorm import RMSNorm
from ..ops.heads import (
    merge_heads_backward,
    merge_heads_forward,
    split_heads_backward,
    split_heads_forward,
)
from ..ops.rope import rope_apply_backward, rope_apply_forward
from ..ops.sdpa import sdpa_backward, sdpa_forward
from .latent_config import LatentConfig


class LatentAttention(KVCacheMixin, Module):
    """Causal multi-head latent attention, exactly as transformers' DeepseekV3Attention.

    Shapes: x (B, T, d), positions (T,) or (B, T) integers, key_padding_mask (B, S) boolean
    (True = a real token; with use_cache S counts the cached tokens too) -> out (B, T, d).

    Forward (walked backwards in `backward`):
        1. queries = W_query(x), or W_q_up(q_norm(W_q_down(x)))   (B, T, H * Dq)
        2. split heads; q_nope, q_rope = the first Dn, last Dr dims  (B, H, T, Dn | Dr)
        3. kv = W_kv_down(x); latent, k_rope = its first C, last Dr dims  (B, T, C | Dr)
        4. latent = kv_norm(latent)                                (B, T, C)
        5. RoPE on q_rope and k_rope at `positions`                (rope only)
        6. cache: [latent; k_rope] of earlier chunks in front (use_cache only; then steps
           7-12 run forward only, absorbed into latent space, in _attend_absorbed)
        7. kv = W_kv_up(latent), split heads; k_nope, values       (B, H, S, Dn | Dv)
        8. query = [q_nope; q_rope], key = [k_nope; k_rope for every head]  (B, H, T | S, Dq)
        9. mask: causal by token order, & key padding             (T, S) or (B, 1, T, S)
       10. SDPA at config.softmax_scale, dropout on the weights    (B, H, T, Dv)
       11. merge heads                                            (B, T, H * Dv)
       12. out = out_proj(context)                                (B, T, d)
    """

    _kv_names = ("cache_kv",)  # one array: each token's [latent; rotated rope key]
    _kv_axis = 1  # (B, S, C + Dr)

    def __init__(self, config: LatentConfig, *, rng=None):
        super().__init__()
        if not isinstance(config, LatentConfig):
            raise TypeError(f"config must be an npattn.LatentConfig, got {config!r}")
        self._config = config
        c = config
        H, C, Dq = c.num_heads, c.kv_lora_rank, c.qk_head_dim
        self.rng = make_rng(rng)
        if c.q_lora_rank is None:
            self.W_query = Linear(c.hidden_size, H * Dq, bias=False, rng=self.rng)  # as q_proj
        else:
            self.W_q_down = Linear(c.hidden_size, c.q_lora_rank, bias=c.qkv_bias, rng=self.rng)
            self.q_norm = RMSNorm(c.q_lora_rank, eps=c.norm_eps)
            self.W_q_up = Linear(c.q_lora_rank, H * Dq, bias=False, rng=self.rng)
        self.W_kv_down = Linear(c.hidden_size, C + c.qk_rope_head_dim, c.qkv_bias, rng=self.rng)
        self.kv_norm = RMSNorm(C, eps=c.norm_eps)
        self.W_kv_up = Linear(C, H * (c.qk_nope_head_dim + c.v_head_dim), False, rng=self.rng)
        self.out_proj = Linear(H * c.v_head_dim, c.hidden_size, bias=c.out_bias, rng=self.rng)
        self.attn_weights = None  # (B, H, T, S), before dropout
        self.dropout_mask = None  # keep-mask, or None
        self.reset_cache()

    @property
    def config(self) -> LatentConfig:
        """The configuration: the one source of truth, read-only (its sizes fixed the
        weights); type(m)(m.config) plus the state_dict rebuilds the module."""
        return self._config

    @property
    def cache_latent(self):
        """The cached normalised latents, (B, S_cached, C), a read-only view (or None)."""
        held = self._kv.held(0)
        return None if held is None else held[..., : self.config.kv_lora_rank]

    @property
    def cache_k_rope(self):
        """The cached rotated rope keys, (B, S_cached, Dr), a read-only view (or None)."""
        held = self._kv.held(0)
        return None if held is None else held[..., self.config.kv_lora_rank :]

    def forward(self, x, use_cache: bool = False, *, positions=None, key_padding_mask=None):
        c = self.config
        H, C, Dn = c.num_heads, c.kv_lora_rank, c.qk_nope_head_dim
        x = check_tokens(x, c.hidden_size, self.dtype)
        B, T = x.shape[:2]
        use_cache = self._check_call(B, use_cache, None)
        start = self.ptr_current_pos if use_cache else 0
        check_scores(B, H, T, start + T, x.dtype)
        pos = check_positions(positions, B, T, start)
        kpm = None
        if key_padding_mask is not None:  # with the cache: one entry per cached + new token
            kpm = check_key_padding_mask(key_padding_mask, B, start + T)
        # 1. queries                         (B, T, d) -> (B, T, H * Dq)
        if c.q_lora_rank is None:
            queries = self.W_query(x)
        else:
            q_latent = self.W_q_down(x)  # (B, T, d) -> (B, T, Cq)
            q_latent = self.q_norm(q_latent)  # (B, T, Cq)
            queries = self.W_q_up(q_latent)  # (B, T, Cq) -> (B, T, H * Dq)
        # 2. split heads                     (B, T, H * Dq) -> (B, H, T, Dq)
        queries, q_split = split_heads_forward(queries, H)
        q_nope, q_rope = queries[..., :Dn], queries[..., Dn:]  # (B, H, T, Dn), (B, H, T, Dr)
        # 3. the latent and the rope key     (B, T, d) -> (B, T, C + Dr)
        kv = self.W_kv_down(x)
        latent, k_rope = kv[..., :C], kv[..., C:]  # (B, T, C), (B, T, Dr)
        # 4. kv_norm                         (B, T, C)
        latent = self.kv_norm(latent)
        # 5. RoPE on the Dr dims of every query head and on the one shared rope key
        q_rope_cache = k_rope_cache = None
        if c.rope is not None:
            cos, sin = c.rope.tables(c.qk_rope_head_dim, pos)  # (T, R) or (B, T, R), float64
            cos, sin = cos.astype(x.dtype), sin.astype(x.dtype)
            head_cos = cos if cos.ndim == 2 else cos[:, None]  # (B, T, R) -> (B, 1, T, R)
            head_sin = sin if sin.ndim == 2 else sin[:, None]
            q_rope, q_rope_cache = rope_apply_forward(
                q_rope, head_cos, head_sin, interleaved=c.rope.interleaved
            )  # (B, H, T, Dr)
            k_rope, k_rope_cache = rope_apply_forward(
                k_rope, cos, sin, interleaved=c.rope.interleaved
            )  # (B, T, Dr)
        # 6. the cache: (B, S_cached, C + Dr) + (B, T, C + Dr) -> (B, S, C + Dr)
        if use_cache:
            (cached,) = self._kv.stage(np.concatenate([latent, k_rope], axis=-1))
            return self._attend_absorbed(q_nope, q_rope, cached, kpm)
        S = T
        # 7. per-head keys and values        (B, S, C) -> (B, S, H * (Dn + Dv)) -> (B, H, S, .)
        kv_heads = self.W_kv_up(latent)
        kv_heads, kv_split = split_heads_forward(kv_heads, H)  # (B, H, S, Dn + Dv)
        k_nope, values = kv_heads[..., :Dn], kv_heads[..., Dn:]  # (B, H, S, Dn), (B, H, S, Dv)
        # 8. query = [q_nope; q_rope], key = [k_nope; k_rope], k_rope broadcast to each head
        query = np.concatenate([q_nope, q_rope], axis=-1)  # (B, H, T, Dq)
        k_rope_heads = np.broadcast_to(k_rope[:, None], (B, H, S, c.qk_rope_head_dim))
        key = np.concatenate([k_nope, k_rope_heads], axis=-1)  # (B, H, S, Dq)
        # 9. mask: causal by token order, & key padding       (T, S) or (B, 1, T, S)
        mask = attention_mask(0, T, 0, S, kpm=kpm)
        # 10. SDPA                           (B, H, T, Dv)
        dropout_p = c.dropout if self.training else 0.0
        context, sdpa_cache = sdpa_forward(
            query, key, values, mask, dropout_p, scale=c.softmax_scale, rng=self.rng
        )
        # 11. merge heads                    (B, H, T, Dv) -> (B, T, H * Dv)
        context, merge_cache = merge_heads_forward(context)
        # 12. output projection              (B, T, H * Dv) -> (B, T, d)
        out = self.out_proj(context)
        self.attn_weights = sdpa_cache.attn_weights
        self.dropout_mask = sdpa_cache.keep
        self.reset_cache()
        self._cache = (q_split, kv_split, q_rope_cache, k_rope_cache, sdpa_cache, merge_cache)
        return out

    def _attend_absorbed(self, q_nope, q_rope, cached, kpm):
        """Steps 7-12 of a cached call in latent space: W_UK (the key rows of W_kv_up) folded
        into the queries, W_UV (its value rows) applied after attention, so no per-head key
        or value is formed (docs/modern/deepseek_mla.md). Forward only.

        Shapes: q_nope (B, H, T, Dn), q_rope (B, H, T, Dr), cached (B, S, C + Dr) (this
        chunk's [latent; k_rope] behind the cached ones), kpm (B, S) or None -> (B, T, d).
        With W_UK,h (Dn, C) and W_UV,h (Dv, C) head h's rows of W_kv_up:
            q_h . k_j,h = (q_nope,h W_UK,h) . c_j + q_rope,h . k_rope,j
            sum_j a_j v_j,h = W_UV,h (sum_j a_j c_j)
        k_rope carries RoPE's position-dependent rotation, so it cannot be folded into a
        fixed matrix: it stays a key of its own, beside the latent.
        """
        c = self.config
        H, C, Dn = c.num_heads, c.kv_lora_rank, c.qk_nope_head_dim
        T, S = q_nope.shape[2], cached.shape[1]
        W_kv_up = self.W_kv_up.weight.reshape(H, Dn + c.v_head_dim, C)  # head h's rows
        W_UK, W_UV = W_kv_up[:, :Dn], W_kv_up[:, Dn:]  # (H, Dn, C), (H, Dv, C)
        # 7.-8. W_UK folded into the queries: the query of head h reads [c_j; k_rope_j]
        q_latent = q_nope @ W_UK  # (B, H, T, Dn) @ (H, Dn, C) -> (B, H, T, C)
        query = np.concatenate([q_latent, q_rope], axis=-1)  # (B, H, T, C + Dr)
        key = cached[:, None]  # (B, S, C + Dr) -> (B, 1, S, C + Dr): one "head" for all H
        value = key[..., :C]  # (B, 1, S, C): the latents themselves
        # 9. mask: slots ptr .. ptr + T - 1 against 0 .. S - 1 (a single new token with no
        #    padding sees every key: no mask)
        mask = None
        if T > 1 or kpm is not None:
            mask = attention_mask(self.ptr_current_pos, T, 0, S, kpm=kpm)  # (T, S) | (B,1,T,S)
        # 10. attention on the latents, at the scale of the full form
        dropout_p = c.dropout if self.training else 0.0
        context_latent, attn_weights, keep = grouped_attention(
            query, key, value, mask, scale=c.softmax_scale, dropout_p=dropout_p, rng=self.rng
        )  # (B, H, T, C); attn_weights (B, H, T, S), shown once the call succeeded
        # W_UV: each head's value from its attended latent
        context = context_latent @ W_UV.swapaxes(-1, -2)  # (B, H, T, C) @ (H, C, Dv)
        # 11.-12. merge heads, out_proj; the staged chunk joins the cache
        shown = (_guard.readonly(attn_weights), keep)
        return self._finish_cached(context, shown)  # (B, H, T, Dv) -> (B, T, d)

    def backward(self, dout):
        q_split, kv_split, q_rope_cache, k_rope_cache, sdpa_cache, merge_cache = (
            self._require_full_forward()
        )
        c = self.config
        Dn = c.qk_nope_head_dim
        # 12.
        dcontext = self.out_proj.backward(dout)  # (B, T, H * Dv)
        # 11.
        dcontext = merge_heads_backward(dcontext, merge_cache)  # (B, H, T, Dv)
        # 10.
        dquery, dkey, dvalues = sdpa_backward(dcontext, sdpa_cache)  # (B, H, T | S, Dq | Dv)
        # 8. the concatenations split back; k_rope fed every head: their gradients are summed
        dq_nope, dq_rope = dquery[..., :Dn], dquery[..., Dn:]  # (B, H, T, Dn), (B, H, T, Dr)
        dk_nope = dkey[..., :Dn]  # (B, H, S, Dn)
        dk_rope = dkey[..., Dn:].sum(axis=1)  # (B, H, S, Dr) -> (B, S, Dr)
        # 7.
        dkv_heads = np.concatenate([dk_nope, dvalues], axis=-1)  # (B, H, S, Dn + Dv)
        dkv_heads = split_heads_backward(dkv_heads, kv_split)  # (B, S, H * (Dn + Dv))
        dlatent = self.W_kv_up.backward(dkv_heads)  # (B, S, C)
        # 5. RoPE's backward: the rotation by -theta
        if c.rope is not None:
            dq_rope = rope_apply_backward(dq_rope, q_rope_cache)  # (B, H, T, Dr)
            dk_rope = rope_apply_backward(dk_rope, k_rope_cache)  # (B, T, Dr)
        # 4.
        dlatent = self.kv_norm.backward(dlatent)  # (B, T, C)
        # 3.
        dkv = np.concatenate([dlatent, dk_rope], axis=-1)  # (B, T, C + Dr)
        dx = self.W_kv_down.backward(dkv)  # (B, T, d)
        # 2.
        dqueries = np.concatenate([dq_nope, dq_rope], axis=-1)  # (B, H, T, Dq)
        dqueries = split_heads_backward(dqueries, q_split)  # (B, T, H * Dq)
        # 1. x feeds the queries and the latent: the two terms of dx are summed
        if c.q_lora_rank is None:
            dx += self.W_query.backward(dqueries)
        else:
            dq_latent = self.W_q_up.backward(dqueries)  # (B, T, Cq)
            dq_latent = self.q_norm.backward(dq_latent)  # (B, T, Cq)
            dx += self.W_q_down.backward(dq_latent)
        return dx

    def extra_repr(self) -> str:
        return self.config.describe()
