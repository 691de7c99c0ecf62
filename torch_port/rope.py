"""Rotary position embedding (RoPE), split-halves layout (Llama, Qwen, Hugging Face).

Dims i and i + E/2 form a pair rotated by the angle pos * inv_freq[i]:
    rotate(x) = x * cos + cat(-x2, x1) * sin,   x1, x2 the two halves of x.
cos and sin are computed in float64 (angles reach context_length radians, where float32 would
lose ~1e-4) and cast to the tensor's dtype when applied.

Shape legend: T tokens, E = head_dim (even).
"""

from __future__ import annotations

import math

import torch

FREQ_CONFIG_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_context_length")


def compute_rope_params(
    head_dim: int, theta_base: float = 10_000, context_length: int = 4096, freq_config=None
):
    """cos, sin, each (context_length, head_dim) in float64, for positions 0..context_length-1.

    freq_config: None, or Llama 3.1's frequency scaling, a dict with FREQ_CONFIG_KEYS: long
    wavelengths are divided by `factor`, short ones kept, the band between blended smoothly.
    """
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for RoPE, got {head_dim}")
    half = torch.arange(0, head_dim, 2, dtype=torch.float64)  # (E/2,) = 0, 2, ..., E-2
    inv_freq = 1.0 / theta_base ** (half / head_dim)  # (E/2,)
    if freq_config is not None:
        inv_freq = _llama31_scaling(inv_freq, freq_config)
    positions = torch.arange(context_length, dtype=torch.float64)  # (context_length,)
    angles = positions[:, None] * inv_freq[None, :]  # (context_length, E/2)
    angles = torch.cat([angles, angles], dim=1)  # (context_length, E): pair i and i + E/2
    return torch.cos(angles), torch.sin(angles)


def _llama31_scaling(inv_freq: torch.Tensor, cfg: dict) -> torch.Tensor:
    """Llama 3.1's rescaled inverse frequencies (E/2,) -> (E/2,)."""
    missing = [k for k in FREQ_CONFIG_KEYS if k not in cfg]
    if missing:
        raise KeyError(f"rope_freq_config lacks {missing} (needs {FREQ_CONFIG_KEYS})")
    factor, low, high = cfg["factor"], cfg["low_freq_factor"], cfg["high_freq_factor"]
    original = cfg["original_context_length"]
    wavelen = 2 * math.pi / inv_freq  # (E/2,)
    low_freq_wavelen, high_freq_wavelen = original / low, original / high
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)  # 0 at the long end, 1 at the short end
    smoothed = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    medium = (wavelen <= low_freq_wavelen) & (wavelen >= high_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x by its positions' angles, split-halves layout.

    Shapes: x (..., T, E), cos and sin (T, E) (the rows of x's positions) -> (..., T, E).
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]  # (..., T, E/2) each
    rotated = torch.cat([-x2, x1], dim=-1)  # (..., T, E)
    return x * cos + rotated * sin
