"""Checking and casting the token input x of an attention module."""

from __future__ import annotations

import numpy as np

from .. import _guard
from .._checks import (
    as_float_array,
    check_allocation,
    check_bool,
    check_ndim,
    check_positive_int,
    check_probability,
    physical_memory_bytes,
)
from ..fast.dispatch import ATTN_IMPLS, check_attn_impl


def prepare_input(x, d_in: int, dtype, context_length: int | None = None) -> np.ndarray:
    """x as an array of the module's dtype, checked: (B, T, d_in), or also (T, d_in) for the
    classes without a context_length (SelfAttention_v1/v2, as in the chapter's section 3.4).

    Modules compute in the dtype of their parameters, so x is cast (a float64 input to a
    float32 module is computed in float32, as after torch's .to(dtype)). The result is
    private and read-only (npattn/_guard.py): the caller may change x before the backward.
    """
    x_in, x = x, as_float_array(x, "x")
    if context_length is None:
        check_ndim(x, "x", (2, 3), f"(T, d_in={d_in}) or (B, T, d_in={d_in})")
    else:
        check_ndim(x, "x", 3, f"(B, T, d_in={d_in})")
    if x.shape[-1] != d_in:
        raise ValueError(f"x must have shape (B, T, d_in={d_in}), got {tuple(x.shape)}")
    if context_length is not None and x.shape[-2] > context_length:
        raise ValueError(
            f"x has {x.shape[-2]} tokens but context_length is {context_length}: "
            f"x must have shape (B, T <= {context_length}, d_in)"
        )
    if x.shape[-2] == 0:
        raise ValueError("x must have at least one token: shape (B, T >= 1, d_in)")
    return _guard.private(x.astype(dtype, copy=False), x_in)  # one copy for all projections


_UNUSED = object()  # an argument the class does not take (None is a bad value, not "unused")


def check_attention_args(
    d_in, d_out, context_length=_UNUSED, dropout=_UNUSED, num_heads=_UNUSED, qkv_bias=False
):
    """Validate the chapter's constructor arguments; returns them normalised (None if unused)."""
    check_bool(qkv_bias, "qkv_bias")
    d_in = check_positive_int(d_in, "d_in")
    d_out = check_positive_int(d_out, "d_out")
    check_allocation((max(d_out, d_in), d_out), 4, "d_in, d_out", "a float32 weight")
    context_length = (
        None if context_length is _UNUSED else check_positive_int(context_length, "context_length")
    )
    dropout = None if dropout is _UNUSED else check_probability(dropout, "dropout")
    if num_heads is _UNUSED:
        num_heads = None
    else:
        num_heads = check_positive_int(num_heads, "num_heads")
        if d_out % num_heads:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
    return d_in, d_out, context_length, dropout, num_heads


def chapter_mask(context_length: int) -> np.ndarray:
    """The chapter's `mask` buffer: triu(ones, diagonal=1), 1 = masked (float32, like torch).

    Its size is checked before it is made: a (context_length, context_length) float32 buffer
    larger than the machine's memory raises ValueError naming context_length.
    """
    nbytes = 4 * context_length**2
    memory = physical_memory_bytes()
    if memory is not None and 2 * nbytes > memory:  # np.triu makes one temporary as large
        raise ValueError(
            f"context_length={context_length} needs a ({context_length}, {context_length}) "
            f"float32 mask buffer of {nbytes / 2**30:.1f} GiB (twice that while it is made), "
            f"more than this machine's {memory / 2**30:.1f} GiB of memory"
        )
    try:
        return np.triu(np.ones((context_length, context_length), dtype=np.float32), k=1)
    except MemoryError as e:
        raise ValueError(
            f"context_length={context_length}: no memory for its {nbytes / 2**30:.1f} GiB mask "
            f"buffer"
        ) from e


def attend_mask(mask_buffer: np.ndarray, T: int) -> np.ndarray:
    """The chapter's buffer, truncated to T tokens, as a boolean mask with True = attend."""
    return mask_buffer[:T, :T] == 0  # (context_length, context_length) -> (T, T)


def attn_impl_property(choices: tuple = ATTN_IMPLS) -> property:
    """`m.attn_impl`, checked against `choices` whenever it is set: in the constructor or
    later. The chapter's classes take every choice; the modern ones "reference" or "tiled"."""

    def fget(self) -> str:
        return self._attn_impl

    def fset(self, value) -> None:
        self._attn_impl = check_attn_impl(value, choices)

    doc = "one of " + ", ".join(f'"{c}"' for c in choices) + f' ("{choices[0]}" is the default)'
    return property(fget, fset, doc=doc)
