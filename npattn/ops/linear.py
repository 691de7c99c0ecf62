"""Linear layer in torch layout: out = x @ W.T + b, with W of shape (d_out, d_in).

Shapes: x (..., d_in), weight (d_out, d_in), bias (d_out,) or None -> out (..., d_out).
"""

from __future__ import annotations

import numpy as np

from .. import _grad, _guard
from .._checks import as_float_array, as_grad, check_min_ndim


def check_linear_args(x, weight, bias=None):
    """x, weight and bias as float arrays of matching shapes, or a ValueError naming the one.

    Shapes: x (..., d_in), weight (d_out, d_in), bias (d_out,) or None.
    """
    weight = as_float_array(weight, "weight")
    x = as_float_array(x, "x")
    check_min_ndim(x, "x", 1, "(..., d_in)")
    if weight.ndim != 2:
        raise ValueError(f"weight must have shape (d_out, d_in), got {tuple(weight.shape)}")
    d_out, d_in = weight.shape
    if x.shape[-1] != d_in:
        raise ValueError(
            f"x must have shape (..., d_in={d_in}) to match weight (d_out, d_in) = "
            f"{tuple(weight.shape)}, got {tuple(x.shape)}"
        )
    if bias is not None:
        bias = as_float_array(bias, "bias")
        if bias.shape != (d_out,):
            raise ValueError(
                f"bias must have shape (d_out={d_out},) to match weight {tuple(weight.shape)}, "
                f"got {tuple(bias.shape)}"
            )
    return x, weight, bias


def linear_forward(x, weight, bias=None):
    """out = x @ weight.T + bias.

    Shapes: x (..., d_in), weight (d_out, d_in), bias (d_out,) -> out (..., d_out).
    Returns (out, cache) with cache = (x, weight, has_bias): private copies where the caller
    holds them (npattn/_guard.py), so changing x or weight later cannot change the backward.
    Under npattn.no_grad() the cache is None and nothing is copied.
    """
    x_in, weight_in = x, weight
    x, weight, bias = check_linear_args(x, weight, bias)
    d_out, d_in = weight.shape
    # one matrix product over all rows: (N, d_in) @ (d_in, d_out) -> (N, d_out), N = prod(...)
    # (numpy's stacked (..., d_in) @ (d_in, d_out) is slower: it runs one product per batch)
    out = (x.reshape(-1, d_in) @ weight.T).reshape(*x.shape[:-1], d_out)  # (..., d_out)
    if bias is not None:
        out = out + bias
    if not _grad.is_grad_enabled():
        return out, None  # no backward can follow: no cache, no copy
    x, weight = _guard.private(x, x_in), _guard.private(weight, weight_in)
    cache = (x, weight, bias is not None)  # x: (..., d_in), weight: (d_out, d_in)
    return out, cache


def linear_backward(dout, cache):
    """Gradients of out = x @ weight.T + bias.

    Shapes: dout (..., d_out) -> dx (..., d_in), dweight (d_out, d_in), dbias (d_out,) or None.
    """
    x, weight, has_bias = _grad.require(cache, "linear_backward")
    dtype = np.result_type(x, weight)  # the forward's output dtype
    dout = as_grad(dout, x.shape[:-1] + (weight.shape[0],), dtype)
    x2 = x.reshape(-1, x.shape[-1])  # (N, d_in), N = prod(...)
    d2 = dout.reshape(-1, weight.shape[0])  # (N, d_out)
    dx = (d2 @ weight).reshape(x.shape)  # (N, d_out) @ (d_out, d_in) -> (N, d_in) -> (..., d_in)
    dweight = d2.T @ x2  # (d_out, N) @ (N, d_in) -> (d_out, d_in)
    dbias = d2.sum(axis=0) if has_bias else None  # (d_out,)
    return dx, dweight, dbias
