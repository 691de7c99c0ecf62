"""Inverted dropout: kept values are scaled by 1 / (1 - p), so the expectation is unchanged.

Shapes: x (...) -> out (...). The keep-mask is boolean, True = kept.
"""

from __future__ import annotations

import numpy as np

from .. import _grad, _guard
from .._checks import (
    as_float_array,
    as_grad,
    check_allocation,
    check_bool_mask,
    check_probability,
    make_rng,
)


def dropout_keep_mask(shape, p: float, rng=None) -> np.ndarray:
    """A boolean keep-mask in which each entry is kept with probability 1 - p.

    Shapes: -> shape. `rng` is a numpy Generator, an int seed, or None.
    """
    p = check_probability(p, "p")
    try:
        shape = tuple(int(n) for n in np.broadcast_shapes(shape))  # (n, ...) or n
    except (TypeError, ValueError) as e:
        raise TypeError(f"shape must be a tuple of sizes >= 0, got {shape!r}") from e
    check_allocation(shape, 8, "shape", "a keep-mask")  # random() draws float64
    return make_rng(rng).random(shape) >= p


def dropout_scale(p: float) -> float:
    """1 / (1 - p), the scale of the kept values; 0 for p = 1, where nothing is kept (torch
    returns zeros for p = 1 rather than 0 * inf)."""
    return 0.0 if p == 1.0 else 1.0 / (1.0 - p)


def dropout_forward(x, p: float, *, rng=None, keep=None):
    """out = x * keep / (1 - p); `keep` is drawn from `rng` unless given.

    Shapes: x (...), keep broadcastable to x -> out (...).
    Returns (out, cache) with cache = (keep or None, 1 / (1 - p), x.shape, x.dtype), or None
    under npattn.no_grad().
    With p = 0 and no keep-mask, out is x itself (not a copy) and keep is None; a keep-mask
    with p = 0 raises ValueError, as in sdpa_forward (with p = 0 nothing is dropped, as in
    torch, so a mask that drops would contradict p). p = 1 drops everything: out = 0.
    """
    x = as_float_array(x, "x")
    p = check_probability(p, "p")
    keep_in = keep
    if keep is None:
        if p == 0.0:
            return x, _grad.keep((None, 1.0, x.shape, x.dtype))  # identity: x, as torch does
        keep = dropout_keep_mask(x.shape, p, rng)
    elif p == 0.0:
        raise ValueError("keep needs p > 0 (kept values are scaled by 1 / (1 - p))")
    else:
        keep = check_bool_mask(keep, x.shape, "keep", "x", "a keep-mask, True = kept")
    scale = dropout_scale(p)
    out = np.where(keep, x * x.dtype.type(scale), 0).astype(x.dtype, copy=False)
    if not _grad.is_grad_enabled():
        return out, None  # no backward can follow: no cache, no copy
    keep = _guard.private(keep, keep_in)  # the caller's mask may change later: a copy
    return out, (keep, scale, x.shape, x.dtype)  # keep: bool, broadcasts to x.shape


def dropout_backward(dout, cache):
    """The same mask and scale as the forward: dx = dout * keep / (1 - p).

    Shapes: dout (...) -> dx (...).
    """
    keep, scale, shape, dtype = _grad.require(cache, "dropout_backward")
    dout = as_grad(dout, shape, dtype)
    if keep is None:
        return dout  # identity
    return np.where(keep, dout * dout.dtype.type(scale), 0).astype(dout.dtype, copy=False)
