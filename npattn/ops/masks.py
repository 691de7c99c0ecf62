"""Causal masks (plain, sliding-window, from positions), key-padding masks, and the chapter's
two ways of applying them.

Masks are boolean with True meaning "attend", as in torch SDPA.
Shapes: scores / attn_weights (..., T, S); mask broadcastable to (..., T, S).

Method 1 (chapter 3.5.1): softmax, zero the future with tril, renormalise each row.
Method 2: set the future to -inf before the softmax. Both give the same weights and the same
gradients; tests/test_masks.py shows it.
"""

from __future__ import annotations

import numpy as np

from .. import _grad, _guard
from .._checks import (
    as_array,
    as_float_array,
    as_grad,
    check_allocation,
    check_bool_mask,
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


def sliding_window_mask(L: int, S: int | None = None, *, window: int | None) -> np.ndarray:
    """Boolean causal sliding-window mask, True = attend, top-left aligned like causal_mask.

    Shapes: -> (L, S). Query i attends key j when 0 <= i - j < window: itself and the
    window - 1 keys before it. A window >= L (or None) is the plain causal mask.
    """
    L = check_positive_int(L, "L")
    S = L if S is None else check_positive_int(S, "S")
    check_allocation((L, S), 8, "L, S", "a sliding-window mask")  # int64 position differences
    return position_mask(np.arange(L), np.arange(S), window=window)


def position_mask(q_positions, k_positions, *, window: int | None = None) -> np.ndarray:
    """Causal (and sliding-window) mask from absolute positions, True = attend.

    Shapes: q_positions (L,), k_positions (S,) integers -> (L, S). Query at position p attends
    the key at position r when 0 <= p - r (< window, if a window is given). Cached decoding
    uses it with queries at ptr_current_pos .. ptr_current_pos + L - 1.
    """
    if window is not None:
        window = check_positive_int(window, "window")
    q_positions = as_array(q_positions, "q_positions")
    k_positions = as_array(k_positions, "k_positions")
    for name, a in (("q_positions", q_positions), ("k_positions", k_positions)):
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{name} must be integers, got dtype {a.dtype}")
    # signed, so that p - r below cannot wrap around as unsigned integers would
    q_positions, k_positions = q_positions.astype(np.int64), k_positions.astype(np.int64)
    if q_positions.ndim != 1 or k_positions.ndim != 1:
        raise ValueError(
            f"q_positions and k_positions must have shapes (L,) and (S,), got "
            f"{q_positions.shape} and {k_positions.shape}"
        )
    L, S = q_positions.size, k_positions.size
    check_allocation((L, S), 8, "q_positions, k_positions", "a mask")  # int64 differences
    diff = q_positions[:, None] - k_positions[None, :]  # (L, 1) - (1, S) -> (L, S)
    mask = diff >= 0
    if window is not None:
        mask &= diff < window
    return mask


def key_padding_mask(lengths, S: int) -> np.ndarray:
    """Boolean key-padding mask from per-sequence lengths, True = a real key (attend).

    Shapes: lengths (B,) integers in [0, S] -> (B, S); key j of sequence b is real when
    j < lengths[b]. Combine with a (L, S) mask as mask & kpm[:, None, None, :] -> (B, 1, L, S);
    a query row left with no key gives 0 in sdpa_forward.
    """
    S = check_positive_int(S, "S")
    lengths = as_array(lengths, "lengths")
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(
            f"lengths must be integers of shape (B,), got dtype {lengths.dtype}, "
            f"shape {lengths.shape}"
        )
    if lengths.size and (lengths.min() < 0 or lengths.max() > S):
        raise ValueError(f"lengths must lie in [0, S={S}], got {lengths.tolist()}")
    check_allocation((lengths.size, S), 8, "lengths, S", "a key-padding mask")  # int64 arange
    return np.arange(S)[None, :] < lengths[:, None]  # (1, S) < (B, 1) -> (B, S)


def mask_scores_forward(attn_scores, mask):
    """Method 2: masked positions become -inf, so the softmax after it gives them weight 0.

    Shapes: attn_scores (..., T, S), mask broadcastable -> out (..., T, S).
    Returns (out, cache) with cache = (mask, shape, dtype), or None under npattn.no_grad().
    """
    attn_scores = as_float_array(attn_scores, "attn_scores")
    check_min_ndim(attn_scores, "attn_scores", 2, "(..., T, S)")
    mask_in = mask
    mask = check_bool_mask(mask, attn_scores.shape, "mask", "attn_scores")
    out = np.where(mask, attn_scores, -np.inf).astype(attn_scores.dtype, copy=False)
    return out, _grad.keep((_guard.private(mask, mask_in), attn_scores.shape, out.dtype))


def mask_scores_backward(dout, cache):
    """Gradient flows only through the positions that were kept.

    Shapes: dout (..., T, S) -> dattn_scores (..., T, S).
    """
    mask, shape, dtype = _grad.require(cache, "mask_scores_backward")
    dout = as_grad(dout, shape, dtype)
    return np.where(mask, dout, 0).astype(dout.dtype, copy=False)


def mask_renormalize_forward(attn_weights, mask):
    """Method 1: zero the masked weights (tril), then divide each row by its new sum.

    Shapes: attn_weights (..., T, S), mask broadcastable -> out (..., T, S).
    A row with nothing left gives zeros, not NaN. Returns (out, cache); cache is None under
    npattn.no_grad().
    """
    attn_weights = as_float_array(attn_weights, "attn_weights")
    check_min_ndim(attn_weights, "attn_weights", 2, "(..., T, S)")
    mask_in = mask
    mask = check_bool_mask(mask, attn_weights.shape, "mask", "attn_weights")
    # 1. masked_simple = attn_weights * mask
    masked = np.where(mask, attn_weights, 0).astype(attn_weights.dtype, copy=False)
    # 2. row_sums = masked_simple.sum(-1)
    row_sums = masked.sum(axis=-1, keepdims=True)  # (..., T, 1)
    row_sums = np.where(row_sums == 0, 1, row_sums).astype(masked.dtype, copy=False)
    # 3. out = masked_simple / row_sums
    out = masked / row_sums
    if not _grad.is_grad_enabled():
        return out, None  # no backward can follow: no cache, no copy
    # the caller gets out and may change it: the cache keeps its own copy (npattn/_guard.py)
    mask, out_kept = _guard.private(mask, mask_in), _guard.private(out, out)
    # mask: bcast (..., T, S), out_kept: (..., T, S), row_sums (..., T, 1)
    cache = (mask, out_kept, row_sums)
    return out, cache


def mask_renormalize_backward(dout, cache):
    """Backward of zero-then-renormalise, steps 3 -> 1 of the forward.

    Shapes: dout (..., T, S) -> dattn_weights (..., T, S).
    """
    mask, out, row_sums = _grad.require(cache, "mask_renormalize_backward")
    dout = as_grad(dout, out.shape, out.dtype)
    # 3. out = masked / r, r = sum(masked): dmasked = (dout - sum(dout * out)) / r
    dmasked = (dout - np.sum(dout * out, axis=-1, keepdims=True)) / row_sums
    # 2. (row_sums feeds step 3 only; folded in above)
    # 1. masked = attn_weights * mask
    return np.where(mask, dmasked, 0).astype(dmasked.dtype, copy=False)
