"""A real model's attention layer as a torch nn.Module, built from an npattn.AttentionConfig:
the mirror of npattn.Attention, with the same config object, state_dict keys, forward
signature and KV cache.

    config = npattn.AttentionConfig(hidden_size=64, num_heads=4, num_kv_heads=2,
                                    rope=npattn.RoPE(theta=500_000.0))
    m = torch_port.Attention(config, dtype=torch.float64)
    out = m(x)                                  # (B, T, 64)

Forward (each option switches its step on):
    1. q, k, v = W_query(x), W_key(x), W_value(x)            (B, T, H*E), (B, T, G*E) x 2
    2. QK-norm over the whole width ("all", OLMo 2)          before the split
    3. split heads                                           (B, H, T, E), (B, G, T, E)
    4. QK-norm per head ("head", Qwen3, Gemma 3)
    5. RoPE at `positions` on the first R dims of q and k    float64 tables from config.rope
    6. KV cache: append k, v (a window keeps the last `window` slots)
    7. scores = q k^T * scale; softcap; mask (causal by slot, window, key padding)
    8. softmax over the keys (sinks join the denominator), fully masked rows -> 0, dropout
    9. context = weights @ v (GQA: each key/value head repeated for its group), merge heads
   10. out_proj

Shape legend: B batch, T query tokens, S key tokens, H heads, G key/value heads,
E = head_dim, R = rotary dims, d = hidden_size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from npattn.models.config import AttentionConfig

from .kv_cache import KVCacheMixin, append
from .qwen3 import RMSNorm


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool):
    """RoPE on the first R dims of x, the other E - R passed through.

    cos, sin hold the split-halves layout (angles concatenated twice); interleaved pairs
    dims (2i, 2i + 1) and gives pair i the angle of column i.
    Shapes: x (B, heads, T, E); cos, sin (T, R) or (B, 1, T, R) -> (B, heads, T, E).
    """
    R = cos.shape[-1]
    x_rot, x_pass = x[..., :R], x[..., R:]  # (..., T, R), (..., T, E - R)
    if interleaved:
        c, s = cos[..., : R // 2], sin[..., : R // 2]  # (..., T, R/2)
        x1, x2 = x_rot[..., 0::2], x_rot[..., 1::2]  # (..., T, R/2) each
        pairs = torch.stack((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)  # (..., T, R/2, 2)
        rotated = pairs.flatten(-2)  # (..., T, R)
    else:
        x1, x2 = x_rot[..., : R // 2], x_rot[..., R // 2 :]  # (..., T, R/2) each
        rotated = x_rot * cos + torch.cat((-x2, x1), dim=-1) * sin  # (..., T, R)
    return torch.cat((rotated, x_pass), dim=-1)  # (..., T, E)


class Attention(KVCacheMixin, nn.Module):
    """The attention layer of a decoder, every option read from `config` (npattn's dataclass).

    state_dict, in npattn.Attention's order: `sinks` (H,) when config.sinks (the module's own
    parameter comes first, as in torch), then the children W_query, W_key, W_value, out_proj
    (nn.Linear, with biases as config.qkv_bias / out_bias say), and q_norm, k_norm (RMSNorm,
    parameter `scale`) when config.qk_norm.
    Shapes: x (B, T, d) -> (B, T, d). Cache: cache_k, cache_v (B, G, S_cached, E), keys after
    RoPE; `cache_start` is the slot of cache_k's first key (a window drops older ones).
    """

    def __init__(self, config: AttentionConfig, *, dtype=None):
        super().__init__()
        if not isinstance(config, AttentionConfig):
            raise TypeError(f"config must be an npattn.AttentionConfig, got {config!r}")
        self.config = config
        d, H, G, E = config.hidden_size, config.num_heads, config.kv_heads, config.head_size
        self.W_query = nn.Linear(d, H * E, bias=config.qkv_bias, dtype=dtype)
        self.W_key = nn.Linear(d, G * E, bias=config.qkv_bias, dtype=dtype)
        self.W_value = nn.Linear(d, G * E, bias=config.qkv_bias, dtype=dtype)
        self.out_proj = nn.Linear(H * E, config.out_width, bias=config.out_bias, dtype=dtype)
        norm = config.qk_norm
        if norm is not None:
            q_width, k_width = (H * E, G * E) if norm.width == "all" else (E, E)
            self.q_norm = RMSNorm(q_width, norm.eps, offset=norm.offset, dtype=dtype)
            self.k_norm = RMSNorm(k_width, norm.eps, offset=norm.offset, dtype=dtype)
        if config.sinks:
            self.sinks = nn.Parameter(torch.zeros(H, dtype=dtype))  # first in the state_dict
        self.dropout = nn.Dropout(config.dropout)  # no parameters: not in the state_dict
        self._init_cache()
        self.cache_start = 0

    def reset_cache(self) -> None:
        """Empty the cache: the next cached chunk starts at slot and position 0."""
        super().reset_cache()
        self.cache_start = 0

    def extra_repr(self) -> str:
        return self.config.describe()

    def forward(self, x, use_cache=False, *, positions=None, key_padding_mask=None):
        """Self-attention over x (and the cached tokens when use_cache).

        positions: int (T,) or (B, T), the RoPE positions (default ptr_current_pos + arange(T));
        the causal mask and the window follow the order of the tokens, not positions.
        key_padding_mask: bool (B, S), True = real token; with use_cache it covers the cached
        and the new tokens (S = ptr_current_pos + T).
        Shapes: x (B, T, d) -> (B, T, d).
        """
        cfg = self.config
        B, T = self._check_x(x, use_cache)
        H, G, E = cfg.num_heads, cfg.kv_heads, cfg.head_size
        start = self.ptr_current_pos if use_cache else 0
        pos = self._positions(positions, B, T, start)
        key_padding_mask = self._check_padding(key_padding_mask, B, start + T)

        # 1. projections
        queries = self.W_query(x)  # (B, T, d) -> (B, T, H*E)
        keys_new = self.W_key(x)  # (B, T, G*E)
        values_new = self.W_value(x)  # (B, T, G*E)
        # 2. QK-norm over the whole projection, before the split (OLMo 2)
        if cfg.qk_norm is not None and cfg.qk_norm.width == "all":
            queries, keys_new = self.q_norm(queries), self.k_norm(keys_new)
        # 3. split heads
        queries = queries.view(B, T, H, E).transpose(1, 2)  # -> (B, H, T, E)
        keys_new = keys_new.view(B, T, G, E).transpose(1, 2)  # -> (B, G, T, E)
        values_new = values_new.view(B, T, G, E).transpose(1, 2)  # -> (B, G, T, E)
        # 4. QK-norm per head (Qwen3, Gemma 3)
        if cfg.qk_norm is not None and cfg.qk_norm.width == "head":
            queries, keys_new = self.q_norm(queries), self.k_norm(keys_new)
        # 5. RoPE from float64 tables, cast to the activations' dtype
        if cfg.rope is not None:
            cos, sin = (
                torch.from_numpy(np.ascontiguousarray(t)).to(queries)
                for t in cfg.rope.tables(E, pos)
            )  # (T, R) or (B, T, R)
            if cos.dim() == 3:
                cos, sin = cos[:, None], sin[:, None]  # (B, T, R) -> (B, 1, T, R)
            queries = rotate(queries, cos, sin, cfg.rope.interleaved)  # (B, H, T, E)
            keys_new = rotate(keys_new, cos, sin, cfg.rope.interleaved)  # (B, G, T, E)
        # 6. KV cache
        if use_cache:
            keys_base = append(self.cache_k, keys_new, dim=2)  # (B, G, S, E)
            values_base = append(self.cache_v, values_new, dim=2)
            k_start = self.cache_start
        else:
            keys_base, values_base, k_start = keys_new, values_new, 0
        S = keys_base.shape[2]
        keys = keys_base.repeat_interleave(cfg.group_size, dim=1)  # (B, G, S, E) -> (B, H, S, E)
        values = values_base.repeat_interleave(cfg.group_size, dim=1)  # (B, H, S, E)

        # 7. scores, soft-capping, mask
        scores = queries @ keys.transpose(2, 3)  # (B, H, T, E) @ (B, H, E, S) -> (B, H, T, S)
        scores = scores * cfg.softmax_scale
        if cfg.softcap is not None:
            scores = cfg.softcap * torch.tanh(scores / cfg.softcap)
        keep = self._keep(B, T, S, start, k_start, key_padding_mask, x.device)  # (B|1, 1, T, S)
        scores = scores.masked_fill(~keep, -torch.inf)
        # 8. softmax; the sinks join each row's denominator; a row with no key (and no sink) -> 0
        if cfg.sinks:
            sink = self.sinks.to(scores.dtype).view(1, H, 1, 1).expand(B, H, T, 1)
            weights = torch.softmax(torch.cat((scores, sink), dim=-1), dim=-1)[..., :S]
        else:
            weights = torch.softmax(scores, dim=-1)  # NaN on rows with no key
            no_key = ~keep.any(dim=-1, keepdim=True)  # (B|1, 1, T, 1)
            weights = weights.masked_fill(no_key, 0.0)
        weights = self.dropout(weights)  # (B, H, T, S)
        # 9. context, merge heads
        context = (weights @ values).transpose(1, 2)  # (B, H, T, E) -> (B, T, H, E)
        context = context.reshape(B, T, H * E)  # (B, T, H*E)
        # 10. output projection
        out = self.out_proj(context)  # (B, T, H*E) -> (B, T, d)

        if use_cache and cfg.window is not None and S > cfg.window:
            drop = S - cfg.window  # keep the last `window` slots: all a later query can see
            keys_base, values_base = keys_base[:, :, drop:], values_base[:, :, drop:]
            k_start += drop
        self._commit(use_cache, T, cache_k=keys_base, cache_v=values_base)
        if use_cache:
            self.cache_start = k_start
        return out

    def _keep(self, B, T, S, q_start, k_start, key_padding_mask, device):
        """True where query slot i may see key slot j. Shapes: -> (B or 1, 1, T, S)."""
        cfg = self.config
        q_slot = torch.arange(q_start, q_start + T, device=device)  # (T,)
        k_slot = torch.arange(k_start, k_start + S, device=device)  # (S,)
        diff = q_slot[:, None] - k_slot[None, :]  # (T, 1) - (1, S) -> (T, S)
        keep = torch.ones(T, S, dtype=torch.bool, device=device)
        if cfg.causal:
            keep = diff >= 0
        if cfg.window is not None:
            keep = keep & (diff < cfg.window)
        keep = keep[None, None]  # (1, 1, T, S)
        if key_padding_mask is not None:
            real = key_padding_mask[:, k_start : k_start + S].to(device)  # (B, S)
            keep = keep & real[:, None, None, :]  # (B, 1, T, S)
        return keep

    def _check_x(self, x, use_cache: bool) -> tuple[int, int]:
        d = self.config.hidden_size
        if not torch.is_tensor(x) or x.dim() != 3 or x.shape[-1] != d:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must have shape (B, T, hidden_size={d}), got {shape}")
        if use_cache and not self.config.causal:
            raise ValueError(
                "use_cache=True needs a causal layer: with causal=False every token sees the "
                "later ones too; run the full forward"
            )
        if use_cache and self.cache_k is not None and self.cache_k.shape[0] != x.shape[0]:
            raise ValueError(
                f"x has batch size {x.shape[0]} but the cache holds batch size "
                f"{self.cache_k.shape[0]}: call reset_cache() before changing the batch"
            )
        return x.shape[0], x.shape[1]

    @staticmethod
    def _positions(positions, B: int, T: int, start: int) -> np.ndarray:
        """The RoPE positions as an int64 array (T,) or (B, T)."""
        if positions is None:
            return np.arange(start, start + T, dtype=np.int64)
        if torch.is_tensor(positions):
            positions = positions.detach().cpu().numpy()
        pos = np.asarray(positions)
        if pos.shape not in ((T,), (B, T)) or not np.issubdtype(pos.dtype, np.integer):
            raise ValueError(
                f"positions must be an integer array of shape (T,)=({T},) or (B, T)=({B}, {T}), "
                f"got {pos.dtype} {pos.shape}"
            )
        if pos.size and pos.min() < 0:
            raise ValueError(f"positions must be >= 0, got a minimum of {pos.min()}")
        return pos.astype(np.int64)

    @staticmethod
    def _check_padding(key_padding_mask, B: int, S: int):
        if key_padding_mask is None:
            return None
        if (
            not torch.is_tensor(key_padding_mask)
            or key_padding_mask.dtype != torch.bool
            or tuple(key_padding_mask.shape) != (B, S)
        ):
            got = getattr(key_padding_mask, "shape", type(key_padding_mask).__name__)
            raise ValueError(
                f"key_padding_mask must be a boolean tensor of shape (B, S)=({B}, {S}) "
                f"(True = real token; S counts the cached and the new tokens), got "
                f"{tuple(got) if hasattr(got, '__len__') else got}"
            )
        return key_padding_mask
