"""Several Linear layers that read the same input, computed as one matrix product.

The chapter's W_query, W_key and W_value all read x. Stacking their weights row-wise gives
one (3 d_out, d_in) weight, so three GEMMs become one larger, faster one; the gradient of the
stacked weight splits back into the three. With one weight it is one Linear layer (the fast
paths run out_proj with it too). Torch layout throughout: weight (d_out, d_in).

The maths is ops/linear.py's (and so are the argument checks); each product is split over
the threads (fast/_parallel.py, split_matmul): BLAS itself then never starts its own
threads, whose spinning after a product would slow the attention threads that run next.

Forward (walked backwards in fused_linear_backward), N = prod(...) rows:
    1. weight = concat(weights), bias = concat(biases)      (sum d_out, d_in), (sum d_out,)
    2. out = x @ weight.T + bias                            (N, d_in) @ (d_in, sum d_out)
Backward:
    2. dx = dout @ weight                                   (N, sum d_out) @ (sum d_out, d_in)
       dweight = dout^T @ x                                 (sum d_out, N) @ (N, d_in)
       dbias = rowsum over N of dout                        (sum d_out,)
    1. dweights, dbiases = dweight, dbias split by each weight's rows
"""

from __future__ import annotations

import numpy as np

from .. import _grad, _guard
from .._checks import as_float_array, as_grad
from ..ops.linear import check_linear_args
from ._parallel import split_matmul


def fused_linear_forward(x, weights, biases=None):
    """out = concat(x @ W.T + b for W, b in zip(weights, biases)) along the last axis.

    Shapes: x (..., d_in), weights n x (d_out_i, d_in), biases n x (d_out_i,) or None
    -> out (..., sum d_out_i). Returns (out, cache).
    """
    if not isinstance(weights, (list, tuple)):
        raise TypeError(f"weights must be a list of arrays, got {type(weights).__name__}")
    weights = [as_float_array(w, f"weights[{i}]") for i, w in enumerate(weights)]
    if not weights or any(w.ndim != 2 or w.shape[1] != weights[0].shape[1] for w in weights):
        raise ValueError(
            f"weights must be one or more arrays of shape (d_out_i, d_in), got "
            f"{[tuple(w.shape) for w in weights]}"
        )
    if biases is not None:
        if not isinstance(biases, (list, tuple)) or len(biases) != len(weights):
            raise ValueError(
                f"biases must be None or {len(weights)} arrays in a list, got {biases!r}"
            )
        biases = [as_float_array(b, f"biases[{i}]") for i, b in enumerate(biases)]
        for i, (w, b) in enumerate(zip(weights, biases)):
            if b.shape != w.shape[:1]:  # each bias belongs to its own weight's rows
                raise ValueError(f"biases[{i}] must have shape ({w.shape[0]},), got {b.shape}")
    x_in = x
    # 1. stack: a copy of the weights, small next to the product (x has many rows); ours
    #    alone, so read-only and kept by the cache without another copy (npattn/_guard.py)
    weight = _guard.readonly(np.concatenate(weights, axis=0))  # -> (sum d_out_i, d_in)
    bias = None if biases is None else np.concatenate(biases)  # (sum d_out_i,)
    x, weight, bias = check_linear_args(x, weight, bias)
    d_out, d_in = weight.shape
    # 2. out = x @ weight.T + bias, split over the threads             (N, sum d_out_i)
    out = split_matmul(x.reshape(-1, d_in), weight.T).reshape(*x.shape[:-1], d_out)
    if bias is not None:
        out = out + bias if np.result_type(out, bias) != out.dtype else np.add(out, bias, out=out)
    if not _grad.is_grad_enabled():
        return out, None  # no backward can follow: no cache, no copy
    x = _guard.private(x, x_in)  # the caller's x may change before the backward
    splits = np.cumsum([w.shape[0] for w in weights])[:-1]  # row offsets of each weight
    return out, (x, weight, bias is not None, splits)


def fused_linear_backward(dout, cache):
    """Gradients of fused_linear_forward.

    Shapes: dout (..., sum d_out_i) -> dx (..., d_in), dweights n x (d_out_i, d_in),
    dbiases n x (d_out_i,) or None.
    """
    x, weight, has_bias, splits = _grad.require(cache, "fused_linear_backward")
    dout = as_grad(dout, x.shape[:-1] + (weight.shape[0],), np.result_type(x, weight))
    x2 = x.reshape(-1, x.shape[-1])  # (N, d_in)
    d2 = dout.reshape(-1, weight.shape[0])  # (N, sum d_out_i)
    # 2. the two products, each split over the threads
    dx = split_matmul(d2, weight).reshape(x.shape)  # (N, sum d_out) @ (sum d_out, d_in)
    dweight = split_matmul(d2.T, x2)  # (sum d_out, N) @ (N, d_in) -> (sum d_out, d_in)
    dbias = d2.sum(axis=0) if has_bias else None  # (sum d_out_i,)
    # 1. the stacked rows go back to their own weights (views, no copy)
    dweights = np.split(dweight, splits, axis=0)  # (sum d_out_i, d_in) -> n x (d_out_i, d_in)
    dbiases = None if dbias is None else np.split(dbias, splits)
    return dx, dweights, dbiases


def fused_layers_forward(x, layers):
    """Linear layers that read the same x, run as one fused_linear_forward instead of their
    own forwards: each layer forgets its last forward (its own backward would use an older
    input) and is handed its gradients by fused_layers_backward.

    Shapes: x (..., in_features) -> tuple of (..., out_features), one per layer; cache.
    """
    weights = [layer.weight for layer in layers]
    biases = None if layers[0].bias is None else [layer.bias for layer in layers]
    x = as_float_array(x, "x").astype(weights[0].dtype, copy=False)  # as Linear.forward casts
    out, cache = fused_linear_forward(x, weights, biases)  # (..., sum of out_features)
    for layer in layers:
        layer.forget_forward()
    bounds = np.cumsum([w.shape[0] for w in weights])[:-1]
    return tuple(np.split(out, bounds, axis=-1)), cache


def fused_layers_backward(douts, cache, layers):
    """fused_layers_forward's backward: dx, each layer's gradients set on it (set_grads).

    Shapes: douts, one (..., out_features) per layer (or one array for a single layer)
    -> dx (..., in_features).
    """
    dout = douts if isinstance(douts, np.ndarray) else np.concatenate(douts, axis=-1)
    dx, dweights, dbiases = fused_linear_backward(dout, cache)
    for i, layer in enumerate(layers):
        layer.set_grads(dweights[i], None if dbiases is None else dbiases[i])
    return dx
