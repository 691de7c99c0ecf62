"""Inverted dropout: kept values are scaled by 1 / (1 - p), so the expectation is unchanged.

Shapes: x (...) -> out (...). The keep-mask is boolean, True = kept.
"""

from __future__ import annotations

import numpy as np

from .._checks import as_float_array, check_probability, make_rng


def dropout_keep_mask(shape, p: float, rng=None) -> np.ndarray:
    """A boolean keep-mask in which each entry is kept with probability 1 - p.

    Shapes: -> shape. `rng` is a numpy Generator, an int seed, or None.
    """
    p = check_probability(p, "p")
    return make_rng(rng).random(shape) >= p


def dropout_forward(x, p: float, *, rng=None, keep=None):
    """out = x * keep / (1 - p); `keep` is drawn from `rng` unless given.

    Shapes: x (...), keep broadcastable to x -> out (...). Returns (out, cache=(keep, scale)).
    With p = 0 and no keep-mask, out is x itself (a no-op) and keep is None.
    """
    x = as_float_array(x, "x")
    p = check_probability(p, "p")
    if keep is None:
        if p == 0.0:
            return x, (None, 1.0, x.shape)
        keep = dropout_keep_mask(x.shape, p, rng)
    else:
        keep = np.asarray(keep)
        if keep.dtype != np.bool_:
            raise TypeError(f"keep must be a boolean keep-mask, got dtype {keep.dtype}")
        try:
            fits = np.broadcast_shapes(keep.shape, x.shape) == x.shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"keep of shape {tuple(keep.shape)} does not broadcast to x of shape "
                f"{tuple(x.shape)}"
            )
    scale = 1.0 / (1.0 - p)
    out = np.where(keep, x * x.dtype.type(scale), 0).astype(x.dtype, copy=False)
    return out, (keep, scale, x.shape)  # keep: bool bcast to x.shape; scale: 1/(1-p)


def dropout_backward(dout, cache):
    """The same mask and scale as the forward: dx = dout * keep / (1 - p).

    Shapes: dout (...) -> dx (...).
    """
    keep, scale, shape = cache
    if tuple(np.shape(dout)) != tuple(shape):
        raise ValueError(f"dout must have the forward output's shape {shape}, got {np.shape(dout)}")
    if keep is None:
        return dout
    return np.where(keep, dout * dout.dtype.type(scale), 0).astype(dout.dtype, copy=False)
