"""Splitting d_out into heads and merging them back: a reshape and a transpose.

Shapes: (B, T, d_out) <-> (B, H, T, E) with E = d_out // H (the chapter's head_dim).
Each backward is the other direction's forward.
"""

from __future__ import annotations

import numpy as np

from .._checks import as_float_array, as_grad, check_ndim, check_positive_int


def split_heads_forward(x, num_heads: int):
    """(B, T, d_out) -> (B, H, T, E): view as (B, T, H, E), then swap T and H.

    Returns (out, cache) with cache = (x.shape,). The result is a view of x, not a copy.
    """
    x = np.asarray(x)
    check_ndim(x, "x", 3, "(B, T, d_out)")
    num_heads = check_positive_int(num_heads, "num_heads")
    b, t, d_out = x.shape
    if d_out % num_heads:
        raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
    out = x.reshape(b, t, num_heads, d_out // num_heads)  # (B, T, d_out) -> (B, T, H, E)
    out = out.transpose(0, 2, 1, 3)  # (B, T, H, E) -> (B, H, T, E)
    return out, (x.shape,)


def split_heads_backward(dout, cache):
    """(B, H, T, E) -> (B, T, d_out). May return a view of dout."""
    (shape,) = cache
    b, t, d_out = shape
    dout = as_float_array(dout, "dout")
    check_ndim(dout, "dout", 4, "(B, H, T, E)")
    h = max(dout.shape[1], 1)
    dout = as_grad(dout, (b, h, t, d_out // h), dout.dtype)
    return dout.transpose(0, 2, 1, 3).reshape(shape)  # (B, H, T, E) -> (B, T, H, E) -> shape


def merge_heads_forward(x):
    """(B, H, T, E) -> (B, T, H*E): the chapter's transpose(1, 2).contiguous().view(b, T, d_out).

    Returns (out, cache) with cache = (x.shape,). May be a view of x (when H or T is 1).
    """
    x = np.asarray(x)
    check_ndim(x, "x", 4, "(B, H, T, E)")
    b, h, t, e = x.shape
    out = x.transpose(0, 2, 1, 3).reshape(b, t, h * e)  # (B, H, T, E) -> (B, T, H, E) -> (B, T, d)
    return out, (x.shape,)


def merge_heads_backward(dout, cache):
    """(B, T, H*E) -> (B, H, T, E). Returns a view of dout."""
    (shape,) = cache
    b, h, t, e = shape
    dout = as_grad(dout, (b, t, h * e), as_float_array(dout, "dout").dtype)
    return dout.reshape(b, t, h, e).transpose(0, 2, 1, 3)  # -> (B, H, T, E)
