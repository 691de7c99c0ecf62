"""The configuration of DeepSeek-V2/V3's multi-head latent attention: data, checked once.

`npattn.LatentAttention(config)` builds the layer (npattn/models/latent.py).

Shape legend: H = num_heads, C = kv_lora_rank (the cached latent), Cq = q_lora_rank,
Dn = qk_nope_head_dim, Dr = qk_rope_head_dim, Dv = v_head_dim, d = hidden_size.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields

from .._checks import check_bool, check_positive_int, check_probability, check_real


def _set(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)  # frozen dataclass: normalise a field in __post_init__


@dataclass(frozen=True)
class LatentConfig:
    """Every option of DeepSeek-V2/V3's attention layer; `npattn.LatentAttention(config)`
    builds it.

    Sizes: hidden_size d, num_heads H; q_lora_rank Cq (None: one W_query, as DeepSeek-V2-Lite;
    else W_q_down to Cq, an RMSNorm, W_q_up); kv_lora_rank C, the width of the cached latent;
    per head qk_nope_head_dim Dn (keys from the latent) + qk_rope_head_dim Dr (the rotated
    part, one rope key shared by all heads), and v_head_dim Dv.
    Biases: qkv_bias on W_q_down and W_kv_down; out_bias on out_proj (transformers'
    attention_bias sets both); W_query and W_q_up never have one, as q_proj and q_b_proj.
    norm_eps: the eps of q_norm and kv_norm. rope: an npattn.RoPE for the Dr rotated dims
    (interleaved=True for DeepSeek-V3's rope_interleave), or None (no rotation).
    scale: the softmax scale (None: 1 / sqrt(Dn + Dr); YaRN's mscale**2 goes in here).
    dropout: on the attention weights, in training mode.
    """

    hidden_size: int
    num_heads: int
    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    qkv_bias: bool = False
    out_bias: bool = False
    norm_eps: float = 1e-6
    rope: object | None = None  # npattn.RoPE
    scale: float | None = None
    dropout: float = 0.0

    def __post_init__(self):
        for name in (
            "hidden_size",
            "num_heads",
            "kv_lora_rank",
            "qk_nope_head_dim",
            "qk_rope_head_dim",
            "v_head_dim",
        ):
            _set(self, name, check_positive_int(getattr(self, name), name))  # a Python int
        if self.q_lora_rank is not None:
            _set(self, "q_lora_rank", check_positive_int(self.q_lora_rank, "q_lora_rank"))
        for name in ("qkv_bias", "out_bias"):
            check_bool(getattr(self, name), name)
        eps = check_real(self.norm_eps, "norm_eps", "a float >= 0")
        if not (math.isfinite(eps) and eps >= 0):
            raise ValueError(f"norm_eps must be a finite float >= 0, got {eps}")
        _set(self, "norm_eps", eps)
        if self.rope is not None:
            from ..ops.rope_config import RoPE  # the table maths lives with the RoPE op

            if not isinstance(self.rope, RoPE):
                raise TypeError(f"rope must be an npattn.RoPE or None, got {self.rope!r}")
            self.rope.inv_freq(self.qk_rope_head_dim)  # the rotated dims and the scaling, now
        if self.scale is not None:
            scale = check_real(self.scale, "scale", "a float > 0 or None")
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"scale must be a finite float > 0, got {scale}")
            _set(self, "scale", scale)
        _set(self, "dropout", check_probability(self.dropout, "dropout"))

    @property
    def qk_head_dim(self) -> int:
        """Dn + Dr, the width of a query (and key) head."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def softmax_scale(self) -> float:
        """The scale the scores are multiplied by: `scale`, or 1 / sqrt(Dn + Dr)."""
        # (Dn + Dr) ** -0.5 as transformers writes it (1 / sqrt differs in the last bit)
        return self.qk_head_dim**-0.5 if self.scale is None else self.scale

    def describe(self) -> str:
        """The fields that differ from their defaults, as `name=value, ...`."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.default is MISSING or value != f.default:
                parts.append(f"{f.name}={value!r}")
        return ", ".join(parts)
