"""Softmax: the chapter's naive version, the stable version, and its backward.

Shapes: any; the softmax runs along `axis` (attention rows: (..., T, S), axis=-1).
"""

from __future__ import annotations

import numpy as np

from .._checks import as_float_array, check_axis


def _check_softmax_axis(axis, x: np.ndarray, name: str = "x") -> int:
    """axis as an int of x, which must not be empty along it (a softmax of nothing)."""
    axis = check_axis(axis, x)
    if x.shape[axis] == 0:
        raise ValueError(
            f"softmax needs at least one entry along axis {axis}: {name} has shape {x.shape}"
        )
    return axis


def softmax_naive(x, axis: int = -1) -> np.ndarray:
    """The chapter's first softmax, exp(x) / sum(exp(x)); overflows for large x (teaching only).

    Shapes: x (...) -> (...). exp(89) is inf in float32 (exp(710) in float64), and inf / inf
    gives NaN, which is why `softmax` subtracts the row max first.
    """
    x = as_float_array(x, "x")
    _check_softmax_axis(axis, x)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def softmax(x, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along `axis`; a row that is all -inf gives zeros, not NaN.

    Shapes: x (...) -> y (...), same dtype. y is also the whole cache for softmax_backward.
    """
    x = as_float_array(x, "x")
    _check_softmax_axis(axis, x)
    return softmax_inplace(x.copy(), axis)  # one new array; x itself is left untouched


def softmax_inplace(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """`softmax`, computed in x's own memory: for scores the caller has just made.

    Shapes: x (...) float -> x (...), overwritten with the softmax and returned.
    """
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x must be a floating numpy array, got {type(x).__name__}")
    if not x.flags.writeable:
        raise ValueError("x is read-only: softmax_inplace writes into x (use softmax)")
    _check_softmax_axis(axis, x)
    # 1. m = rowmax(x); the shift needs no gradient: softmax(x - c) = softmax(x)
    m = np.max(x, axis=axis, keepdims=True)  # (..., 1, ...)
    m[np.isneginf(m)] = 0  # a fully masked row: keep its -inf - 0 = -inf, not NaN
    # 2. e = exp(x - m)
    x -= m
    np.exp(x, out=x)
    # 3. y = e / rowsum(e)
    s = np.sum(x, axis=axis, keepdims=True)  # (..., 1, ...)
    s[s == 0] = 1  # 0 / 1 = 0 on fully masked rows
    x /= s
    return x


def softmax_backward(dy, y, axis: int = -1) -> np.ndarray:
    """dL/dx from dL/dy and the forward output y: dx = y * (dy - sum(dy * y)).

    Shapes: dy (...), y (...) -> dx (...). O(n) per row; the Jacobian is never formed.
    Rows where y = 0 (masked or underflowed entries) get dx = 0.
    """
    y = as_float_array(y, "y")
    check_axis(axis, y)
    dy = as_float_array(dy, "dy")  # complex or string dy: TypeError, not a silent result
    if dy.shape != y.shape:
        raise ValueError(f"dy must have the shape of y {tuple(y.shape)}, got {tuple(dy.shape)}")
    dy = dy.astype(y.dtype, copy=False)  # the gradient follows the forward's dtype
    dx = dy - np.sum(dy * y, axis=axis, keepdims=True)  # (...): the one new array kept
    dx *= y
    return dx
