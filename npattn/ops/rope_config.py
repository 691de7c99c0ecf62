"""RoPE as data: the base, the rotated part of the head, the layout and a frequency scaling,
giving the inverse frequencies and the cos / sin tables that rope_apply_forward reads.

Shape legend: E = head_dim, R = rotary dims (int(E * fraction), even), T tokens, any leading
dims (...). Everything is computed in float64 (transformers computes inv_freq and the angles in
float32; docs/modern/rope.md).

inv_freq (head_dim, seq_len) -> (inv_freq, attention_factor):
    1. R = int(E * fraction); theta_i = theta ** (-2i / R), i < R/2         (R/2,)
    2. the scaling, if any: LinearScaling, DynamicNTK, Llama3 or YaRN      (R/2,), a float
tables (head_dim, positions) -> (cos, sin):
    3. angles = positions * inv_freq                                         (..., T, R/2)
    4. cos, sin = cos([angles, angles]), sin(...), times attention_factor    (..., T, R)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._checks import as_array, check_allocation, check_positive_int, check_real


def _finite(value, name: str, what: str) -> float:
    value = check_real(value, name, what)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be {what}, got {value}")
    return value


def _factor(value, name: str) -> None:
    if not _finite(value, name, "a finite float >= 1") >= 1:
        raise ValueError(f"{name} must be >= 1 (it stretches the context), got {value}")


def _bool(value, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


@dataclass(frozen=True)
class LinearScaling:
    """Position interpolation: every frequency divided by `factor`."""

    factor: float

    def __post_init__(self):
        _factor(self.factor, "LinearScaling.factor")


@dataclass(frozen=True)
class DynamicNTK:
    """NTK-aware scaling of the base, growing with the sequence once it passes the original
    length: theta' = theta * (factor * L / L0 - (factor - 1)) ** (R / (R - 2)), L >= L0."""

    factor: float
    original_max_position_embeddings: int

    def __post_init__(self):
        _factor(self.factor, "DynamicNTK.factor")
        check_positive_int(
            self.original_max_position_embeddings, "DynamicNTK.original_max_position_embeddings"
        )


@dataclass(frozen=True)
class Llama3:
    """Llama 3.1: long wavelengths divided by `factor`, short ones kept, a blend between."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int

    def __post_init__(self):
        _factor(self.factor, "Llama3.factor")
        low = _finite(self.low_freq_factor, "Llama3.low_freq_factor", "a finite float > 0")
        high = _finite(self.high_freq_factor, "Llama3.high_freq_factor", "a finite float")
        if not 0 < low < high:
            raise ValueError(
                f"Llama3 needs 0 < low_freq_factor < high_freq_factor, got {low} and {high}"
            )
        check_positive_int(
            self.original_max_position_embeddings, "Llama3.original_max_position_embeddings"
        )


@dataclass(frozen=True)
class YaRN:
    """YaRN: interpolate the slow pairs, keep the fast ones, a linear ramp between (by the
    number of turns in the original context: beta_fast, beta_slow); cos and sin are scaled
    by attention_factor (by default 0.1 ln(factor) + 1)."""

    factor: float
    original_max_position_embeddings: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True

    def __post_init__(self):
        _factor(self.factor, "YaRN.factor")
        check_positive_int(
            self.original_max_position_embeddings, "YaRN.original_max_position_embeddings"
        )
        fast = _finite(self.beta_fast, "YaRN.beta_fast", "a finite float")
        slow = _finite(self.beta_slow, "YaRN.beta_slow", "a finite float")
        if not 0 < slow <= fast:
            raise ValueError(f"YaRN needs 0 < beta_slow <= beta_fast, got {slow} and {fast}")
        for name in ("mscale", "mscale_all_dim", "attention_factor"):
            if getattr(self, name) is not None:
                _finite(getattr(self, name), f"YaRN.{name}", "None or a finite float")
        if self.attention_factor is not None and not self.attention_factor > 0:
            raise ValueError(f"YaRN.attention_factor must be > 0, got {self.attention_factor}")
        _bool(self.truncate, "YaRN.truncate")


SCALINGS = (LinearScaling, DynamicNTK, Llama3, YaRN)


def llama3_inv_freq(inv_freq, factor, low_freq_factor, high_freq_factor, original):
    """Llama 3.1's scaled frequencies: wavelengths above original / low_freq_factor divided by
    factor, below original / high_freq_factor kept, blended in between.

    Shapes: inv_freq (R/2,) -> (R/2,).
    """
    wavelen = 2 * np.pi / inv_freq  # (R/2,)
    low_freq_wavelen, high_freq_wavelen = original / low_freq_factor, original / high_freq_factor
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    # 0 at the low cut-off, 1 at the high one
    smooth = (original / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    medium = (wavelen <= low_freq_wavelen) & (wavelen >= high_freq_wavelen)
    return np.where(medium, smoothed, scaled)


def yarn_get_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention factor 0.1 * mscale * ln(scale) + 1 (1 for scale <= 1)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn(y: YaRN, theta: float, R: int):
    """YaRN's frequencies and attention factor. Shapes: -> (R/2,), a float."""
    if y.attention_factor is not None:
        attention_factor = float(y.attention_factor)
    elif y.mscale and y.mscale_all_dim:
        attention_factor = yarn_get_mscale(y.factor, y.mscale) / yarn_get_mscale(
            y.factor, y.mscale_all_dim
        )
    else:
        attention_factor = yarn_get_mscale(y.factor)

    def correction_dim(turns):  # the pair index that turns `turns` times in the original length
        L0 = y.original_max_position_embeddings
        return R * math.log(L0 / (turns * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(y.beta_fast), correction_dim(y.beta_slow)
    if y.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, R - 1)
    if low == high:
        high += 0.001  # no division by zero
    ramp = np.clip((np.arange(R // 2) - low) / (high - low), 0, 1)  # (R/2,): 0 fast, 1 slow
    extrapolation = 1 - ramp  # (R/2,): the weight of the original frequency
    pos_freqs = theta ** (np.arange(0, R, 2) / R)  # (R/2,)
    interpolated, original = 1.0 / (y.factor * pos_freqs), 1.0 / pos_freqs
    inv_freq = interpolated * (1 - extrapolation) + original * extrapolation
    return inv_freq, attention_factor


@dataclass(frozen=True)
class RoPE:
    """Rotary position embedding: base `theta`, the first `fraction` of each head rotated,
    split halves or `interleaved` pairs, and an optional frequency scaling.

    Shapes: inv_freq -> (R/2,); tables(head_dim, positions (T,) or (B, T)) -> cos, sin
    (..., T, R), R = rotary_dim(head_dim).
    """

    theta: float = 10_000.0
    fraction: float = 1.0
    interleaved: bool = False
    scaling: LinearScaling | DynamicNTK | Llama3 | YaRN | None = None

    def __post_init__(self):
        if not _finite(self.theta, "RoPE.theta", "a finite float > 0") > 0:
            raise ValueError(f"RoPE.theta must be > 0, got {self.theta}")
        fraction = _finite(self.fraction, "RoPE.fraction", "a float in (0, 1]")
        if not 0 < fraction <= 1:
            raise ValueError(f"RoPE.fraction must be in (0, 1], got {fraction}")
        _bool(self.interleaved, "RoPE.interleaved")
        if self.scaling is not None and not isinstance(self.scaling, SCALINGS):
            names = ", ".join(s.__name__ for s in SCALINGS)
            raise TypeError(f"RoPE.scaling must be None or one of {names}, got {self.scaling!r}")
        if isinstance(self.scaling, YaRN) and self.theta == 1:
            raise ValueError("YaRN divides by ln(theta): RoPE.theta must not be 1")

    def rotary_dim(self, head_dim: int) -> int:
        """R = int(head_dim * fraction), the rotated dims: even and >= 2."""
        head_dim = check_positive_int(head_dim, "head_dim")
        R = int(head_dim * self.fraction)
        if R < 2 or R % 2:
            raise ValueError(
                f"RoPE rotates pairs of dims: int(head_dim * fraction) = int({head_dim} * "
                f"{self.fraction}) = {R} must be even and >= 2"
            )
        return R

    def inv_freq(self, head_dim: int, seq_len: int | None = None):
        """The angle per position of each pair, and the factor cos and sin are scaled by.

        Shapes: -> inv_freq (R/2,) float64, attention_factor a float. seq_len (the largest
        position + 1) matters to DynamicNTK only.
        """
        R = self.rotary_dim(head_dim)
        check_allocation((R // 2,), 8, "head_dim", "inverse frequencies")
        if seq_len is not None:
            seq_len = check_positive_int(seq_len, "seq_len")
        s, theta = self.scaling, float(self.theta)
        # 1. theta_i = theta ** (-2i / R)                                    (R/2,)
        exponents = np.arange(0, R, 2) / R  # (R/2,)
        attention_factor = 1.0
        # 2. the scaling
        if isinstance(s, DynamicNTK):
            if R == 2:
                raise ValueError(
                    f"DynamicNTK raises theta to R / (R - 2): it needs R >= 4 rotary dims, got "
                    f"R = {R} from head_dim={head_dim} and fraction={self.fraction}"
                )
            L0 = s.original_max_position_embeddings
            L = L0 if seq_len is None else max(seq_len, L0)
            growth = np.float64(s.factor * L / L0 - (s.factor - 1))  # >= 1; inf, not an error
            with np.errstate(over="ignore"):
                theta = float(theta * growth ** (R / (R - 2)))
        with np.errstate(over="ignore", divide="ignore"):  # a non-finite result raises below
            if isinstance(s, YaRN):
                inv_freq, attention_factor = _yarn(s, theta, R)
            else:
                inv_freq = 1.0 / theta**exponents  # (R/2,)
        if isinstance(s, LinearScaling):
            inv_freq = inv_freq / s.factor
        elif isinstance(s, Llama3):
            inv_freq = llama3_inv_freq(
                inv_freq,
                s.factor,
                s.low_freq_factor,
                s.high_freq_factor,
                s.original_max_position_embeddings,
            )
        if not (np.all(np.isfinite(inv_freq)) and math.isfinite(attention_factor)):
            raise ValueError(f"{self} gives non-finite frequencies for head_dim={head_dim}")
        return inv_freq, attention_factor

    def tables(self, head_dim: int, positions):
        """cos and sin of positions * inv_freq, split halves, times the attention factor.

        Shapes: positions integers (T,) or (B, T) -> cos, sin (..., T, R) float64.
        DynamicNTK reads seq_len = max(positions) + 1, as transformers' dynamic update does.
        """
        positions = as_array(positions, "positions")
        if not np.issubdtype(positions.dtype, np.integer):
            raise TypeError(f"positions must be integers, got dtype {positions.dtype}")
        if positions.ndim < 1:
            raise ValueError(f"positions must have shape (T,) or (B, T), got {positions.shape}")
        if positions.size and positions.min() < 0:
            raise ValueError(f"positions must be >= 0, got {int(positions.min())}")
        R = self.rotary_dim(head_dim)
        check_allocation(positions.shape + (R,), 16, "positions and head_dim", "cos/sin tables")
        seq_len = int(positions.max()) + 1 if positions.size else None
        inv_freq, attention_factor = self.inv_freq(head_dim, seq_len)
        # 3. angles = positions * inv_freq          (..., T, 1) * (R/2,) -> (..., T, R/2)
        angles = positions[..., None].astype(np.float64) * inv_freq
        angles = np.concatenate([angles, angles], axis=-1)  # (..., T, R): both halves share
        # 4. cos and sin, scaled by the attention factor as transformers does  (..., T, R)
        cos, sin = np.cos(angles) * attention_factor, np.sin(angles) * attention_factor
        if not (np.all(np.isfinite(cos)) and np.all(np.isfinite(sin))):
            raise ValueError(f"{self} gives non-finite cos/sin tables at these positions")
        return cos, sin
