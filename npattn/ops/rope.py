"""Rotary position embedding (RoPE): each pair of dims of q or k is rotated by an angle that
grows with the token's position, so q_i . k_j depends on positions only through i - j.

Shape legend: T tokens, E = head_dim (even), C = context_length, and any leading dims (...).

Two layouts pair the dims differently; they are the same rotation up to a permutation of the
dims (tests/test_rope.py):
    split halves (Llama, Qwen, Hugging Face): dim i is paired with dim i + E/2
    interleaved (GPT-J, RoFormer):            dim 2i is paired with dim 2i + 1
compute_rope_params gives cos and sin in the split-halves layout; rope_forward(interleaved=True)
reads the same table, pair i taking the angle of column i.

Partial rotary (GPT-NeoX, Phi): rope_apply_forward rotates the first R dims of the head by
tables of width R and passes the other E - R through; npattn.RoPE (ops/rope_config.py) makes
such tables, with the frequency scalings of long-context models.

Forward (walked backwards in rope_apply_backward; rope_forward is step 0 and steps 1 to 3):
    0. cos_t, sin_t = cos[positions], sin[positions]            (..., T, E)
    1. interleaved: each angle repeated for both dims of its pair (..., T, R)
    2. out[..., :R] = x * cos_t + rotate_half(x) * sin_t          (..., T, R)
    3. out[..., R:] = x[..., R:]                                  (..., T, E - R)
rotate_half is a rotation by +90 degrees in each plane, so its transpose is -rotate_half and
the backward is the rotation by -theta.
"""

from __future__ import annotations

import numpy as np

from .. import _grad, _guard
from .._checks import (
    as_array,
    as_float_array,
    as_grad,
    check_allocation,
    check_min_ndim,
    check_positive_int,
    check_real,
)
from .rope_config import llama3_inv_freq

FREQ_CONFIG_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_context_length")


def _check_head_dim(head_dim, name: str = "head_dim") -> int:
    head_dim = check_positive_int(head_dim, name)
    if head_dim % 2:
        raise ValueError(f"RoPE rotates pairs of dims: {name} must be even, got {head_dim}")
    return head_dim


def _llama3_scaled(inv_freq: np.ndarray, freq_config) -> np.ndarray:
    """Llama 3.1's frequency scaling from a freq_config dict (npattn.Llama3's maths).

    Shapes: inv_freq (E/2,) -> (E/2,).
    """
    if not hasattr(freq_config, "keys") or set(freq_config) != set(FREQ_CONFIG_KEYS):
        raise ValueError(f"freq_config must be None or a dict with keys {FREQ_CONFIG_KEYS}")
    factor, low, high, original = (
        check_real(freq_config[k], f"freq_config[{k!r}]", "a number") for k in FREQ_CONFIG_KEYS
    )
    if not (factor > 0 and 0 < low < high and original > 0):
        raise ValueError(
            "freq_config needs factor > 0, 0 < low_freq_factor < high_freq_factor and "
            f"original_context_length > 0, got {dict(freq_config)}"
        )
    return llama3_inv_freq(inv_freq, factor, low, high, original)


def compute_rope_params(
    head_dim: int, theta_base: float = 10_000, context_length: int = 4096, freq_config=None
):
    """cos and sin of the rotation angles position * inv_freq, in the split-halves layout.

    Shapes: -> cos (context_length, head_dim), sin (context_length, head_dim), float64.
    inv_freq[i] = theta_base ** (-2i / head_dim) for i < head_dim / 2; the angles are
    repeated for the second half. freq_config (a dict with keys factor, low_freq_factor,
    high_freq_factor, original_context_length) applies Llama 3.1's frequency scaling.
    rope_forward casts the rows it uses to the dtype of x.
    """
    head_dim = _check_head_dim(head_dim)
    context_length = check_positive_int(context_length, "context_length")
    check_allocation((context_length, head_dim), 8, "context_length, head_dim", "cos/sin tables")
    theta_base = check_real(theta_base, "theta_base", "a float > 0")
    if not theta_base > 0:
        raise ValueError(f"theta_base must be > 0, got {theta_base}")
    inv_freq = 1.0 / theta_base ** (np.arange(0, head_dim, 2) / head_dim)  # (E/2,)
    if freq_config is not None:
        inv_freq = _llama3_scaled(inv_freq, freq_config)
    positions = np.arange(context_length, dtype=np.float64)  # (C,)
    angles = positions[:, None] * inv_freq[None, :]  # (C, 1) * (1, E/2) -> (C, E/2)
    angles = np.concatenate([angles, angles], axis=1)  # (C, E): both halves share an angle
    return np.cos(angles), np.sin(angles)


def rotate_half(x: np.ndarray) -> np.ndarray:
    """Split halves: (x1, x2) -> (-x2, x1), a +90 degree turn of each pair (i, i + E/2).

    Shapes: x (..., E) -> (..., E).
    """
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rotate_pairs(x: np.ndarray) -> np.ndarray:
    """Interleaved: (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...), a +90 degree turn of
    each pair (2i, 2i + 1).

    Shapes: x (..., E) -> (..., E).
    """
    out = np.empty_like(x)
    out[..., 0::2] = -x[..., 1::2]
    out[..., 1::2] = x[..., 0::2]
    return out


def _check_table(a, name: str, head_dim: int) -> np.ndarray:
    a = as_float_array(a, name)
    if a.ndim != 2 or a.shape[1] != head_dim:
        raise ValueError(
            f"{name} must have shape (context_length, head_dim={head_dim}), got {tuple(a.shape)}"
        )
    return a


def _positions(offset, positions, T: int, context_length: int) -> np.ndarray:
    """Integer positions (T,) or (..., T), each checked to lie in [0, context_length)."""
    if positions is None:
        if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)):
            raise TypeError(f"offset must be an int, got {type(offset).__name__}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        positions = np.arange(offset, offset + T)
    else:
        if offset != 0:
            raise ValueError("pass either offset or positions, not both")
        positions = as_array(positions, "positions")
        if not np.issubdtype(positions.dtype, np.integer):
            raise TypeError(f"positions must be integers, got dtype {positions.dtype}")
        if positions.ndim < 1 or positions.shape[-1] != T:
            raise ValueError(
                f"positions must have shape (T={T},) or (..., T={T}), got {positions.shape}"
            )
    if positions.size and (positions.min() < 0 or positions.max() >= context_length):
        raise ValueError(
            f"RoPE positions (offset + 0 .. T - 1, or positions) must lie in "
            f"[0, context_length={context_length}) of the cos/sin tables: got positions "
            f"{int(positions.min())}..{int(positions.max())}"
        )
    return positions


def _check_tables(x: np.ndarray, cos_t, sin_t):
    """cos_t, sin_t as arrays of x's dtype, checked: (..., T, R), R even, 2 <= R <= E, leading
    dims broadcastable to x's."""
    cos_t, sin_t = as_float_array(cos_t, "cos_t"), as_float_array(sin_t, "sin_t")
    if cos_t.shape != sin_t.shape:
        raise ValueError(f"cos_t {tuple(cos_t.shape)} and sin_t {tuple(sin_t.shape)} must match")
    check_min_ndim(cos_t, "cos_t", 2, "(..., T, R)")
    T, E, R = x.shape[-2], x.shape[-1], cos_t.shape[-1]
    if R < 2 or R % 2 or R > E:
        raise ValueError(
            f"cos_t and sin_t must have shape (..., T, R) with R even and 2 <= R <= "
            f"E={E} (the head dim of x), got {tuple(cos_t.shape)}"
        )
    try:
        fits = np.broadcast_shapes(cos_t.shape[:-1], x.shape[:-1]) == x.shape[:-1]
    except ValueError:
        fits = False
    if not fits or cos_t.shape[-2] != T:
        raise ValueError(
            f"cos_t and sin_t of shape {tuple(cos_t.shape)} (..., T, R) must broadcast to x's "
            f"(..., T={T}) = {x.shape[:-1]}"
        )
    return cos_t.astype(x.dtype, copy=False), sin_t.astype(x.dtype, copy=False)


def rope_apply_forward(x, cos_t, sin_t, *, interleaved: bool = False):
    """Rotate the first R dims of x by the angles in cos_t, sin_t; pass the other E - R through.

    Shapes: x (..., T, E); cos_t, sin_t (..., T, R), the tables' rows at x's positions,
    broadcastable to x (e.g. (B, 1, T, R) for x (B, H, T, E)); R even, 2 <= R <= E
    -> out (..., T, E), in the dtype of x.
    Returns (out, cache) with cache = (cos_t, sin_t, interleaved, x.shape), cos_t and sin_t
    with each angle repeated for both dims of its pair when interleaved.
    """
    cos_in, sin_in = cos_t, sin_t
    x = as_float_array(x, "x")
    check_min_ndim(x, "x", 2, "(..., T, E)")
    if not isinstance(interleaved, (bool, np.bool_)):
        raise TypeError(f"interleaved must be True or False, got {interleaved!r}")
    cos_t, sin_t = _check_tables(x, cos_t, sin_t)
    # the caller may change cos_t, sin_t in place before the backward: keep private copies
    cos_t, sin_t = _guard.private(cos_t, cos_in), _guard.private(sin_t, sin_in)
    out, cache = _rotate(x, cos_t, sin_t, bool(interleaved))
    return out, _grad.keep(cache)  # None under no_grad: no backward can follow


def _rotate(x: np.ndarray, cos_t: np.ndarray, sin_t: np.ndarray, interleaved: bool):
    """The forward of rope_apply_forward on checked arrays of one dtype: steps 1 to 3."""
    R = cos_t.shape[-1]
    # 1. the angle of each rotated dim                                    (..., T, R)
    if interleaved:  # pair i = dims (2i, 2i + 1) takes the angle of column i
        cos_t = np.repeat(cos_t[..., : R // 2], 2, axis=-1)
        sin_t = np.repeat(sin_t[..., : R // 2], 2, axis=-1)
    rotate = rotate_pairs if interleaved else rotate_half
    x_rot, x_pass = x[..., :R], x[..., R:]  # (..., T, R), (..., T, E - R)
    # 2. out = x * cos + rotate(x) * sin on the first R dims               (..., T, R)
    out = x_rot * cos_t + rotate(x_rot) * sin_t
    # 3. the other E - R dims pass through                                 (..., T, E)
    if R < x.shape[-1]:
        out = np.concatenate([out, x_pass], axis=-1)
    return out, (cos_t, sin_t, interleaved, x.shape)  # cos_t, sin_t: (..., T, R)


def rope_apply_backward(dout, cache):
    """The rotation by -theta on the first R dims: dx = dout * cos - rotate(dout * sin); the
    other E - R dims get dout unchanged.

    Shapes: dout (..., T, E) -> dx (..., T, E).
    """
    cos_t, sin_t, interleaved, shape = _grad.require(cache, "rope_backward")
    dout = as_grad(dout, shape, cos_t.dtype)
    R = cos_t.shape[-1]
    rotate = rotate_pairs if interleaved else rotate_half
    dout_rot, dout_pass = dout[..., :R], dout[..., R:]  # (..., T, R), (..., T, E - R)
    # 3. the pass-through dims: out = x there, so dx = dout                (..., T, E - R)
    # 2. out = x * cos + rotate(x) * sin, and rotate^T = -rotate:
    #    dx = dout * cos - rotate(dout * sin); both dims of a pair share one angle, so this is
    #    dout * cos - rotate(dout) * sin, the same turn by -theta           (..., T, R)
    dx = dout_rot * cos_t - rotate(dout_rot * sin_t)
    # 1. the tables are constants: no gradient
    if R < shape[-1]:
        dx = np.concatenate([dx, dout_pass], axis=-1)
    return dx


def rope_forward(x, cos, sin, offset: int = 0, *, positions=None, interleaved: bool = False):
    """Rotate each pair of dims of x by its position's angle: the tables' rows at the
    positions, then rope_apply_forward.

    Shapes: x (..., T, E); cos, sin (context_length, E) from compute_rope_params; positions
    None (then offset, offset + 1, ..., offset + T - 1: an offset for cached decoding) or
    integers (T,), or broadcastable to x.shape[:-1] (e.g. (B, 1, T) for x (B, H, T, E))
    -> out (..., T, E), in the dtype of x.
    Returns (out, cache), the cache of rope_apply_forward (None under npattn.no_grad()).
    """
    x = as_float_array(x, "x")
    check_min_ndim(x, "x", 2, "(..., T, E)")
    E = _check_head_dim(x.shape[-1], "the head dim of x (x.shape[-1])")
    cos, sin = _check_table(cos, "cos", E), _check_table(sin, "sin", E)
    if cos.shape != sin.shape:
        raise ValueError(f"cos {tuple(cos.shape)} and sin {tuple(sin.shape)} must match")
    pos = _positions(offset, positions, x.shape[-2], cos.shape[0])
    try:
        fits = np.broadcast_shapes(pos.shape, x.shape[:-1]) == x.shape[:-1]
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"positions of shape {pos.shape} must broadcast to x's (..., T) = {x.shape[:-1]}"
        )
    # 1. the rows of this chunk's positions, in the dtype of x          (..., T, E)
    cos_t, sin_t = cos[pos].astype(x.dtype, copy=False), sin[pos].astype(x.dtype, copy=False)
    # 2. the rotation of every pair (R = E: nothing passes through)      (..., T, E)
    out, cache = _rotate(x, cos_t, sin_t, bool(interleaved))
    return out, _grad.keep(cache)  # None under no_grad: no backward can follow


def rope_backward(dout, cache):
    """The rotation by -theta: dx = dout * cos - rotate(dout * sin) (rope_apply_backward).

    Shapes: dout (..., T, E) -> dx (..., T, E).
    """
    # 2. the rotation's backward; 1. the table is a constant: no gradient
    return rope_apply_backward(dout, cache)
