"""Splitting d_out into heads and merging them back: a reshape and a transpose.

Shapes: (B, T, d_out) <-> (B, H, T, E) with E = d_out // H (the chapter's head_dim).
Each backward is the other direction's forward.
"""

from __future__ import annotations

import numpy as np

from .._checks import as_float_array, as_grad, check_ndim, check_positive_int


def split_heads_forward(x, num_heads: int):
    """(B, T, d_out) -> (B, H, T, E): view as (B, T, H, E), then swap T and H.

    Returns (out, cache) with cache = (x.shape, num_heads). The result is a view of x.
    """
    x = as_float_array(x, "x")
    check_ndim(x, "x", 3, "(B, T, d_out)")
    num_heads = check_positive_int(num_heads, "num_heads")
    b, t, d_out = x.shape
    if d_out % num_heads:
        raise ValueError(
            f"x of shape {x.shape}: d_out ({d_out}) must be divisible by num_heads ({num_heads})"
        )
    out = x.reshape(b, t, num_heads, d_out // num_heads)  # (B, T, d_out) -> (B, T, H, E)
    out = out.transpose(0, 2, 1, 3)  # (B, T, H, E) -> (B, H, T, E)
    return out, (x.shape, num_heads)  # the backward takes H from here, never from dout


def split_heads_backward(dout, cache):
    """(B, H, T, E) -> (B, T, d_out). May return a view of dout."""
    shape, h = cache
    b, t, d_out = shape
    dout = as_float_array(dout, "dout")
    dout = as_grad(dout, (b, h, t, d_out // h), dout.dtype)  # (B, H, T, E), H from the cache
    return dout.transpose(0, 2, 1, 3).reshape(shape)  # (B, H, T, E) -> (B, T, H, E) -> shape


def merge_heads_forward(x):
    """(B, H, T, E) -> (B, T, H*E): the chapter's transpose(1, 2).contiguous().view(b, T, d_out).

    Returns (out, cache) with cache = (x.shape,). May be a view of x (when H or T is 1).
    """
    x = as_float_array(x, "x")
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


def split_qkv_heads_forward(qkv, num_heads: int):
    """(B, T, 3 * d_out) -> queries, keys, values, each (B, H, T, E): views, no copy.

    qkv is W_query, W_key and W_value's outputs side by side (fused_linear_forward).
    Returns ((queries, keys, values), cache) with cache = (qkv.shape, num_heads).
    """
    qkv = as_float_array(qkv, "qkv")
    check_ndim(qkv, "qkv", 3, "(B, T, 3 * d_out)")
    num_heads = check_positive_int(num_heads, "num_heads")
    b, t, width = qkv.shape
    if width % (3 * num_heads):
        raise ValueError(f"qkv width ({width}) must be divisible by 3 * num_heads ({num_heads})")
    out = qkv.reshape(b, t, 3, num_heads, width // (3 * num_heads))  # -> (B, T, 3, H, E)
    out = out.transpose(2, 0, 3, 1, 4)  # (B, T, 3, H, E) -> (3, B, H, T, E)
    return (out[0], out[1], out[2]), (qkv.shape, num_heads)


def split_qkv_heads_backward(dqueries, dkeys, dvalues, cache):
    """Three (B, H, T, E) gradients -> one (B, T, 3 * d_out), written in a single copy."""
    shape, h = cache  # H from the cache, never from the gradients
    b, t, width = shape
    dqueries = as_float_array(dqueries, "dqueries")
    douts = [
        as_grad(d, (b, h, t, width // (3 * h)), dqueries.dtype, name)
        for name, d in zip(("dqueries", "dkeys", "dvalues"), (dqueries, dkeys, dvalues))
    ]
    dqkv = np.empty((b, t, 3, h, width // (3 * h)), dtype=dqueries.dtype)
    for i, d in enumerate(douts):
        dqkv[:, :, i] = d.transpose(0, 2, 1, 3)  # (B, H, T, E) -> (B, T, H, E)
    return dqkv.reshape(shape)  # (B, T, 3, H, E) -> (B, T, 3 * d_out)


def repeat_kv(x, groups: int):
    """GQA: each key/value head serves `groups` query heads, like torch.repeat_interleave.

    Shapes: x (..., Hkv, S, E) -> (..., Hkv * groups, S, E); x itself when groups is 1.
    """
    return np.repeat(x, groups, axis=-3) if groups > 1 else x


def repeat_kv_backward(dout, groups: int):
    """The adjoint of repeating: each key/value head's gradient sums its group's.

    Shapes: dout (..., Hkv * groups, S, E) -> (..., Hkv, S, E).
    """
    if groups == 1:
        return dout
    *lead, hq, s, e = dout.shape
    return dout.reshape(*lead, hq // groups, groups, s, e).sum(axis=-3)  # sum over the group
