"""Causal masks and the chapter's two ways of applying them.

Masks are boolean with True meaning "attend", as in torch SDPA.
Shapes: scores / attn_weights (..., T, S); mask broadcastable to (..., T, S).

Method 1 (chapter 3.5.1): softmax, zero the future with tril, renormalise each row.
Method 2: set the future to -inf before the softmax. Both give the same weights and the same
gradients; tests/test_masks.py shows it.
"""

from __future__ import annotations

import numpy as np

from .. import _guard
from .._checks import (
    as_array,
    as_float_array,
    as_grad,
    check_allocation,
    check_min_ndim,
    check_positive_int,
)


def causal_mask(L: int, S: int | None = None) -> np.ndarray:
    """Boolean causal mask, True = attend, top-left aligned like torch's is_causal.

    Shapes: -> (L, S). Query i may attend keys j <= i (np.tril(ones(L, S))).
    """
    L = check_positive_int(L, "L")
    S = L if S is None else check_positive_int(S, "S")
    check_allocation((L, S), 1, "L, S", "a boolean mask")
    return np.tri(L, S, dtype=bool)


def _check_mask(mask, x: np.ndarray, x_name: str) -> np.ndarray:
    mask = as_array(mask, "mask")
    if mask.dtype != np.bool_:
        raise TypeError(f"mask must be boolean (True = attend), got dtype {mask.dtype}")
    try:
        fits = np.broadcast_shapes(mask.shape, x.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to {x_name} of shape "
            f"{tuple(x.shape)} (..., T, S)"
        )
    return mask


def mask_scores_forward(attn_scores, mask):
    """Method 2: masked positions become -inf, so the softmax after it gives them weight 0.

    Shapes: attn_scores (..., T, S), mask broadcastable -> out (..., T, S).
    Returns (out, cache) with cache = (mask, shape, dtype).
    """
    attn_scores = as_float_array(attn_scores, "attn_scores")
    check_min_ndim(attn_scores, "attn_scores", 2, "(..., T, S)")
    mask_in, mask = mask, _check_mask(mask, attn_scores, "attn_scores")
    out = np.where(mask, attn_scores, -np.inf).astype(attn_scores.dtype, copy=False)
    return out, (_guard.private(mask, mask_in), attn_scores.shape, out.dtype)


def mask_scores_backward(dout, cache):
    """Gradient flows only through the positions that were kept.

    Shapes: dout (..., T, S) -> dattn_scores (..., T, S).
    """
    mask, shape, dtype = cache
    dout = as_grad(dout, shape, dtype)
    return np.where(mask, dout, 0).astype(dout.dtype, copy=False)


def mask_renormalize_forward(attn_weights, mask):
    """Method 1: zero the masked weights (tril), then divide each row by its new sum.

    Shapes: attn_weights (..., T, S), mask broadcastable -> out (..., T, S).
    A row with nothing left gives zeros, not NaN. Returns (out, cache).
    """
    attn_weights = as_float_array(attn_weights, "attn_weights")
    check_min_ndim(attn_weights, "attn_weights", 2, "(..., T, S)")
    mask_in, mask = mask, _check_mask(mask, attn_weights, "attn_weights")
    # 1. masked_simple = attn_weights * mask
    masked = np.where(mask, attn_weights, 0).astype(attn_weights.dtype, copy=False)
    # 2. row_sums = masked_simple.sum(-1)
    row_sums = masked.sum(axis=-1, keepdims=True)  # (..., T, 1)
    row_sums = np.where(row_sums == 0, 1, row_sums).astype(masked.dtype, copy=False)
    # 3. out = masked_simple / row_sums
    out = masked / row_sums
    # the caller gets out and may change it: the cache keeps its own copy (npattn/_guard.py)
    mask, out_kept = _guard.private(mask, mask_in), _guard.private(out, out)
    # mask: bcast (..., T, S), out_kept: (..., T, S), row_sums (..., T, 1)
    cache = (mask, out_kept, row_sums)
    return out, cache


def mask_renormalize_backward(dout, cache):
    """Backward of zero-then-renormalise, steps 3 -> 1 of the forward.

    Shapes: dout (..., T, S) -> dattn_weights (..., T, S).
    """
    mask, out, row_sums = cache
    dout = as_grad(dout, out.shape, out.dtype)
    # 3. out = masked / r, r = sum(masked): dmasked = (dout - sum(dout * out)) / r
    dmasked = (dout - np.sum(dout * out, axis=-1, keepdims=True)) / row_sums
    # 2. (row_sums feeds step 3 only; folded in above)
    # 1. masked = attn_weights * mask
    return np.where(mask, dmasked, 0).astype(dmasked.dtype, copy=False)
