"""RMSNorm: rescale each vector to unit root-mean-square, then by a learned per-dim scale.
Used as QK-norm (Qwen3, Gemma 3): applied to each head's queries and keys before RoPE.
Gemma multiplies by (1 + scale) instead of scale: that is `offset=1.0` (offset 0 by default).

Shapes: x (..., E), scale (E,) -> out (..., E); the mean runs over the last axis.

Forward (walked backwards in rmsnorm_backward):
    1. ms    = mean(x**2)                (..., 1)
    2. rstd  = 1 / sqrt(ms + eps)        (..., 1)
    3. x_hat = x * rstd                  (..., E)
    4. out   = x_hat * (offset + scale)  (..., E)
"""

from __future__ import annotations

import numpy as np

from .. import _grad, _guard
from .._checks import as_float_array, as_grad, check_min_ndim, check_real

DEFAULT_EPS = 1e-6  # Qwen3's q_norm / k_norm


def rmsnorm_forward(x, scale, eps: float = DEFAULT_EPS, offset: float = 0.0):
    """out = x * (offset + scale) / sqrt(mean(x**2) + eps).

    Shapes: x (..., E), scale (E,) -> out (..., E), dtype of x and scale together.
    Returns (out, cache) with cache = (x_hat, rstd, gain), gain = offset + scale; gain is a
    private copy where the caller holds it (npattn/_guard.py), so changing scale later cannot
    change the backward. Under npattn.no_grad() the cache is None.
    """
    scale_in = scale
    x = as_float_array(x, "x")
    scale = as_float_array(scale, "scale")
    check_min_ndim(x, "x", 1, "(..., E)")
    if scale.shape != (x.shape[-1],):
        raise ValueError(
            f"scale must have shape (E={x.shape[-1]},) to match x of shape {x.shape} (..., E), "
            f"got {tuple(scale.shape)}"
        )
    eps = check_real(eps, "eps", "a float >= 0")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    offset = check_real(offset, "offset", "a finite float")
    if not np.isfinite(offset):
        raise ValueError(f"offset must be finite, got {offset}")
    dtype = np.result_type(x.dtype, scale.dtype)
    x, scale = x.astype(dtype, copy=False), scale.astype(dtype, copy=False)
    # 1. ms = mean(x**2)                         (..., E) -> (..., 1)
    ms = np.mean(x * x, axis=-1, keepdims=True)
    # 2. rstd = 1 / sqrt(ms + eps)               (..., 1)
    rstd = 1.0 / np.sqrt(ms + dtype.type(eps))
    # 3. x_hat = x * rstd                        (..., E)
    x_hat = x * rstd
    # 4. out = x_hat * gain, gain = offset + scale     (..., E) * (E,)
    gain = scale if offset == 0 else scale + dtype.type(offset)
    out = x_hat * gain
    if not _grad.is_grad_enabled():
        return out, None  # no backward can follow: no cache, no copy
    gain = _guard.private(gain, scale_in)  # the caller may update scale in place (an SGD step)
    return out, (x_hat, rstd, gain)  # x_hat (..., E), rstd (..., 1), gain (E,)


def rmsnorm_backward(dout, cache):
    """Gradients of rmsnorm_forward, steps 4 -> 1.

    Shapes: dout (..., E) -> dx (..., E), dscale (E,).
    """
    x_hat, rstd, gain = _grad.require(cache, "rmsnorm_backward")
    dout = as_grad(dout, x_hat.shape, x_hat.dtype)
    # 4. out = x_hat * (offset + scale): scale is shared by every vector, so its gradient is
    #    summed; the offset is a constant and changes only dx_hat
    dscale = np.sum(dout * x_hat, axis=tuple(range(dout.ndim - 1)))  # (..., E) -> (E,)
    dx_hat = dout * gain  # (..., E)
    # 3.-1. x_hat = x * rstd(x): x feeds x_hat directly and through rstd, giving
    #       dx = rstd * (dx_hat - x_hat * mean(dx_hat * x_hat))   (docs/modern/rmsnorm.md)
    dx = rstd * (dx_hat - x_hat * np.mean(dx_hat * x_hat, axis=-1, keepdims=True))
    return dx, dscale
