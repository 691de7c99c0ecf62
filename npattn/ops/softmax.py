"""Softmax: the chapter's naive version, the stable version, and its backward.

Shapes: any; the softmax runs along `axis` (attention rows: (..., T, S), axis=-1).
"""

from __future__ import annotations

import numpy as np

from .._checks import as_float_array


def softmax_naive(x, axis: int = -1) -> np.ndarray:
    """The chapter's first softmax, exp(x) / sum(exp(x)); overflows for large x (teaching only).

    Shapes: x (...) -> (...). exp(89) is inf in float32 (exp(710) in float64), and inf / inf
    gives NaN, which is why `softmax` subtracts the row max first.
    """
    x = as_float_array(x, "x")
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def softmax(x, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along `axis`; a row that is all -inf gives zeros, not NaN.

    Shapes: x (...) -> y (...), same dtype. y is also the whole cache for softmax_backward.
    """
    x = as_float_array(x, "x")
    m = np.max(x, axis=axis, keepdims=True)  # the shift needs no gradient: softmax(x - c) = y
    m = np.where(np.isneginf(m), 0.0, m).astype(x.dtype, copy=False)  # fully masked row
    e = np.exp(x - m)
    s = e.sum(axis=axis, keepdims=True)
    return e / np.where(s == 0, 1, s).astype(x.dtype, copy=False)  # 0 / 1 = 0 on masked rows


def softmax_backward(dy, y, axis: int = -1) -> np.ndarray:
    """dL/dx from dL/dy and the forward output y: dx = y * (dy - sum(dy * y)).

    Shapes: dy (...), y (...) -> dx (...). O(n) per row; the Jacobian is never formed.
    Rows where y = 0 (masked or underflowed entries) get dx = 0.
    """
    y = as_float_array(y, "y")
    dy = np.asarray(dy)
    if dy.shape != y.shape:
        raise ValueError(f"dy must have the shape of y {tuple(y.shape)}, got {tuple(dy.shape)}")
    return y * (dy - np.sum(dy * y, axis=axis, keepdims=True))
