"""DeepSeek-V2/V3's multi-head latent attention (MLA) with decoupled RoPE as a torch
nn.Module: the mirror of npattn.LatentAttention, with the same config (an npattn.LatentConfig),
state_dict keys and forward signature, and a KV cache of the latent and the rope key only.

Cached calls run in the absorbed form by default (absorbed = True): W_UK folded into the
queries, W_UV applied after attention, so no per-head key or value is formed; with
absorbed = False they up-project the cached latents as the full forward does. Both give the
full forward's numbers.

Shape legend: B batch, T query tokens, S key tokens, H heads, C = kv_lora_rank,
Dn = qk_nope_head_dim, Dr = qk_rope_head_dim, Dq = Dn + Dr, Dv = v_head_dim, d = hidden_size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from .kv_cache import KVCacheMixin, append, attention_weights, position_keep, with_padding
from .modules import _KeepWeights
from .qwen3 import RMSNorm


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool):
    """RoPE on the first R dims of x, the rest passed through.

    Shapes: x (..., T, E), cos and sin (..., T, R) in the split-halves layout (angles
    concatenated twice), broadcastable to x -> (..., T, E). interleaved: pair i = dims
    (2i, 2i + 1) takes the angle of column i; else dims i and i + R/2 are paired.
    """
    R = cos.shape[-1]
    x_rot, x_pass = x[..., :R], x[..., R:]
    if interleaved:
        c, s = cos[..., : R // 2], sin[..., : R // 2]  # (..., T, R/2)
        x0, x1 = x_rot[..., 0::2], x_rot[..., 1::2]  # (..., T, R/2) each
        out = torch.stack([x0 * c - x1 * s, x1 * c + x0 * s], dim=-1).flatten(-2)  # (.., T, R)
    else:
        x1, x2 = x_rot[..., : R // 2], x_rot[..., R // 2 :]
        out = x_rot * cos + torch.cat([-x2, x1], dim=-1) * sin  # (..., T, R)
    return torch.cat([out, x_pass], dim=-1)


class LatentAttention(KVCacheMixin, _KeepWeights):
    """Causal multi-head latent attention, as npattn.LatentAttention and transformers'
    DeepseekV3Attention.

    Shapes: x (B, T, d), positions (T,) or (B, T), key_padding_mask (B, S) boolean (True = a
    real token; with use_cache S counts the cached tokens too) -> (B, T, d).
    Cache: cache_latent (B, S_cached, C), cache_k_rope (B, S_cached, Dr) (after RoPE).
    """

    CACHE_NAMES = ("cache_latent", "cache_k_rope")

    def __init__(self, config, *, dtype=None):
        super().__init__()
        from npattn.models.latent_config import LatentConfig  # the config is npattn's data

        if not isinstance(config, LatentConfig):
            raise TypeError(f"config must be an npattn.LatentConfig, got {config!r}")
        self.config = c = config
        H, C, Dq = c.num_heads, c.kv_lora_rank, c.qk_head_dim
        self.d_in = c.hidden_size  # the name KVCacheMixin's checks read
        if c.q_lora_rank is None:
            self.W_query = nn.Linear(c.hidden_size, H * Dq, bias=False, dtype=dtype)  # as q_proj
        else:
            self.W_q_down = nn.Linear(c.hidden_size, c.q_lora_rank, bias=c.qkv_bias, dtype=dtype)
            self.q_norm = RMSNorm(c.q_lora_rank, eps=c.norm_eps, dtype=dtype)
            self.W_q_up = nn.Linear(c.q_lora_rank, H * Dq, bias=False, dtype=dtype)
        self.W_kv_down = nn.Linear(
            c.hidden_size, C + c.qk_rope_head_dim, bias=c.qkv_bias, dtype=dtype
        )
        self.kv_norm = RMSNorm(C, eps=c.norm_eps, dtype=dtype)
        self.W_kv_up = nn.Linear(
            C, H * (c.qk_nope_head_dim + c.v_head_dim), bias=False, dtype=dtype
        )
        self.out_proj = nn.Linear(H * c.v_head_dim, c.hidden_size, bias=c.out_bias, dtype=dtype)
        self.dropout = nn.Dropout(c.dropout)
        self.absorbed = True  # cached calls in latent space
        self.attn_weights = None
        self._init_cache()

    def _tables(self, positions, like: torch.Tensor):
        """cos, sin (T, R) or (B, T, R) from the config's RoPE (float64), in x's dtype."""
        pos = positions.cpu().numpy() if torch.is_tensor(positions) else np.asarray(positions)
        cos, sin = self.config.rope.tables(self.config.qk_rope_head_dim, pos)
        return torch.from_numpy(cos).to(like), torch.from_numpy(sin).to(like)

    def forward(self, x, use_cache=False, *, positions=None, key_padding_mask=None):
        """Causal self-attention at `positions` (default: ptr_current_pos + arange(T))."""
        self._check_call(x, use_cache, None)
        c = self.config
        H, C, Dn, Dr, Dv = (
            c.num_heads,
            c.kv_lora_rank,
            c.qk_nope_head_dim,
            c.qk_rope_head_dim,
            c.v_head_dim,
        )
        b, num_tokens, _ = x.shape
        start = self.ptr_current_pos if use_cache else 0
        if positions is None:
            positions = np.arange(start, start + num_tokens)
        if key_padding_mask is not None and (
            not torch.is_tensor(key_padding_mask)
            or key_padding_mask.dtype != torch.bool
            or tuple(key_padding_mask.shape) != (b, start + num_tokens)
        ):
            raise ValueError(
                f"key_padding_mask must be a boolean tensor of shape (B, S)="
                f"{(b, start + num_tokens)} (cached and new tokens, True = attend)"
            )
        # 1.-2. queries, per head [nope; rope]
        if c.q_lora_rank is None:
            queries = self.W_query(x)  # (B, T, d) -> (B, T, H * Dq)
        else:
            queries = self.W_q_up(self.q_norm(self.W_q_down(x)))  # (B, T, H * Dq)
        queries = queries.view(b, num_tokens, H, Dn + Dr).transpose(1, 2)  # (B, H, T, Dq)
        q_nope, q_rope = queries.split([Dn, Dr], dim=-1)  # (B, H, T, Dn), (B, H, T, Dr)
        # 3.-4. the latent (normalised) and the shared rope key
        latent_new, k_rope_new = self.W_kv_down(x).split([C, Dr], dim=-1)  # (B, T, C), (B, T, Dr)
        latent_new = self.kv_norm(latent_new)
        # 5. RoPE
        if c.rope is not None:
            cos, sin = self._tables(positions, x)  # (T, R) or (B, T, R)
            head_cos, head_sin = (cos, sin) if cos.dim() == 2 else (cos[:, None], sin[:, None])
            q_rope = _rotate(q_rope, head_cos, head_sin, c.rope.interleaved)  # (B, H, T, Dr)
            k_rope_new = _rotate(k_rope_new, cos, sin, c.rope.interleaved)  # (B, T, Dr)
        # 6. the cache
        latent = append(self.cache_latent, latent_new, dim=1) if use_cache else latent_new
        k_rope = append(self.cache_k_rope, k_rope_new, dim=1) if use_cache else k_rope_new
        S = latent.shape[1]
        # 9. causal by token order, & key padding
        q_pos = torch.arange(start, start + num_tokens, device=x.device)  # (T,)
        keep = position_keep(q_pos, torch.arange(S, device=x.device))  # (T, S)
        keep = with_padding(keep, key_padding_mask)  # (B or 1, 1, T, S)
        if use_cache and self.absorbed:
            # 7.-10. in latent space: scores = (q_nope W_UK) . c + q_rope . k_rope
            W_kv_up = self.W_kv_up.weight.view(H, Dn + Dv, C)
            W_UK, W_UV = W_kv_up[:, :Dn], W_kv_up[:, Dn:]  # (H, Dn, C), (H, Dv, C)
            q_latent = q_nope @ W_UK  # (B, H, T, Dn) @ (H, Dn, C) -> (B, H, T, C)
            attn_scores = q_latent @ latent[:, None].transpose(2, 3)  # (B, H, T, S)
            attn_scores = attn_scores + q_rope @ k_rope[:, None].transpose(2, 3)
            attn_weights = attention_weights(attn_scores * c.softmax_scale, keep, 1)
            self._keep(attn_weights)
            context_latent = self.dropout(attn_weights) @ latent[:, None]  # (B, H, T, C)
            context = context_latent @ W_UV.transpose(1, 2)  # (B,H,T,C) @ (H,C,Dv) -> (B,H,T,Dv)
        else:
            # 7. per-head keys and values from the latent
            kv = self.W_kv_up(latent).view(b, S, H, Dn + Dv).transpose(1, 2)  # (B, H, S, Dn+Dv)
            k_nope, values = kv.split([Dn, Dv], dim=-1)  # (B, H, S, Dn), (B, H, S, Dv)
            # 8. query and key, the rope key shared by every head
            query = torch.cat([q_nope, q_rope], dim=-1)  # (B, H, T, Dq)
            key = torch.cat([k_nope, k_rope[:, None].expand(b, H, S, Dr)], dim=-1)  # (B,H,S,Dq)
            # 10. attention
            attn_scores = query @ key.transpose(2, 3)  # (B, H, T, S)
            attn_weights = attention_weights(attn_scores * c.softmax_scale, keep, 1)
            self._keep(attn_weights)
            context = self.dropout(attn_weights) @ values  # (B, H, T, Dv)
        # 11.-12. merge heads, out_proj
        context = context.transpose(1, 2).reshape(b, num_tokens, H * Dv)  # (B, T, H * Dv)
        out = self.out_proj(context)  # (B, T, d)
        self._commit(use_cache, num_tokens, cache_latent=latent, cache_k_rope=k_rope)
        return out
