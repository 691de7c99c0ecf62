"""Several Linear layers that read the same input, computed as one matrix product.

The chapter's W_query, W_key and W_value all read x. Stacking their weights row-wise gives
one (3 d_out, d_in) weight, so three GEMMs become one larger, faster one; the gradient of the
stacked weight splits back into the three. Torch layout throughout: weight (d_out, d_in).

Forward (walked backwards in fused_linear_backward):
    1. weight = concat(weights), bias = concat(biases)      (sum d_out, d_in), (sum d_out,)
    2. out = x @ weight.T + bias                            (..., sum d_out)
"""

from __future__ import annotations

import numpy as np

from .. import _guard
from .._checks import as_float_array
from ..ops.linear import linear_backward, linear_forward


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
    # 1. stack: a copy of the weights, small next to the product (x has many rows); ours
    #    alone, so read-only and kept by the cache without another copy (npattn/_guard.py)
    weight = _guard.readonly(np.concatenate(weights, axis=0))  # -> (sum d_out_i, d_in)
    bias = None if biases is None else np.concatenate(biases)  # (sum d_out_i,)
    # 2. one linear layer
    out, linear_cache = linear_forward(x, weight, bias)  # (..., sum d_out_i)
    splits = np.cumsum([w.shape[0] for w in weights])[:-1]  # row offsets of each weight
    return out, (linear_cache, splits)


def fused_linear_backward(dout, cache):
    """Gradients of fused_linear_forward.

    Shapes: dout (..., sum d_out_i) -> dx (..., d_in), dweights n x (d_out_i, d_in),
    dbiases n x (d_out_i,) or None.
    """
    linear_cache, splits = cache
    # 2.
    dx, dweight, dbias = linear_backward(dout, linear_cache)
    # 1. the stacked rows go back to their own weights (views, no copy)
    dweights = np.split(dweight, splits, axis=0)  # (sum d_out_i, d_in) -> n x (d_out_i, d_in)
    dbiases = None if dbias is None else np.split(dbias, splits)
    return dx, dweights, dbiases
