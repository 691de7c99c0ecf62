"""Softmax with an attention sink (gpt-oss): one learned logit per head joins each row's
softmax denominator and is then dropped, so a row's weights sum to less than 1 and a head can
put its attention "nowhere".

Shapes: attn_scores (..., L, S); sinks (H,) (one per head, heads on axis -3) or any shape
broadcastable to (..., L, 1) -> attn_weights (..., L, S).

Forward (walked backwards in softmax_with_sink_backward):
    1. m         = max(rowmax(attn_scores), sink)         (..., L, 1), a constant shift
    2. e         = exp(attn_scores - m)                    (..., L, S)
       e_sink    = exp(sink - m)                           (..., L, 1)
    3. denom     = rowsum(e) + e_sink                      (..., L, 1)
       attn_weights = e / denom, p_sink = e_sink / denom
It is the softmax of the row [attn_scores, sink] with the sink's column dropped. A row whose
every score is -inf gives weights 0 (and p_sink = 1). An infinite sink gives the limit:
+inf takes the whole row (weights 0, p_sink = 1), -inf is no sink (the plain softmax; a row
that is also fully masked gives weights 0 and p_sink = 0).
"""

from __future__ import annotations

import numpy as np

from .. import _guard
from .._checks import as_float_array, as_grad, check_min_ndim


def check_sinks(sinks, scores_shape: tuple, scores: str = "attn_scores") -> np.ndarray:
    """sinks as an array broadcastable to (..., L, 1): (H,) becomes (H, 1, 1).

    Shapes: sinks (H,) with H = scores_shape[-3], or broadcastable to (..., L, 1).
    `scores` names where the scores come from, for the messages.
    """
    sinks = as_float_array(sinks, "sinks")
    if sinks.ndim == 1:
        if len(scores_shape) < 3 or sinks.shape[0] != scores_shape[-3]:
            raise ValueError(
                f"sinks of shape (H,) needs heads on axis -3 of the scores ({scores}) of "
                f"shape {tuple(scores_shape)} (..., H, L, S): got {tuple(sinks.shape)}"
            )
        sinks = sinks[:, None, None]  # (H,) -> (H, 1, 1)
    target = tuple(scores_shape[:-1]) + (1,)  # (..., L, 1)
    try:
        fits = np.broadcast_shapes(sinks.shape, target) == target
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"sinks of shape {tuple(sinks.shape)} must be (H,) or broadcast to {target} "
            f"(..., L, 1) of the scores ({scores})"
        )
    return sinks


def softmax_with_sink_forward(attn_scores, sinks, *, copy: bool = True):
    """Softmax over each row of attn_scores plus its sink logit, the sink's share dropped.

    Shapes: attn_scores (..., L, S), sinks (H,) or broadcastable to (..., L, 1)
    -> attn_weights (..., L, S). Returns (attn_weights, cache) with
    cache = (attn_weights, p_sink (..., L, 1), sinks' shape as given); the cache's
    attn_weights is a private copy, or with copy=False the returned array itself, read-only.
    """
    attn_scores = as_float_array(attn_scores, "attn_scores")
    check_min_ndim(attn_scores, "attn_scores", 2, "(..., L, S)")
    sinks = as_float_array(sinks, "sinks")
    given_shape = sinks.shape
    sink = check_sinks(sinks, attn_scores.shape).astype(attn_scores.dtype, copy=False)
    infinite = not np.all(np.isfinite(sink))  # +inf or -inf: the limits, below
    taken = np.isposinf(sink) if infinite else None  # a +inf sink takes its whole row
    if infinite:
        sink = np.where(np.isfinite(sink), sink, -np.inf)  # -inf: no sink at all
    # 1. m = max(rowmax, sink): finite unless the row and its sink are all -inf (then 0)
    m = np.maximum(np.max(attn_scores, axis=-1, keepdims=True), sink)  # (..., L, 1)
    if infinite:
        m = np.where(np.isneginf(m), 0, m)
    # 2. e = exp(scores - m), e_sink = exp(sink - m)
    e = np.exp(attn_scores - m)  # (..., L, S)
    e_sink = np.exp(sink - m)  # (..., L, 1)
    # 3. denom = rowsum(e) + e_sink; weights = e / denom, p_sink = e_sink / denom
    denom = np.sum(e, axis=-1, keepdims=True) + e_sink  # (..., L, 1), >= e_sink > 0
    if infinite:
        denom = np.where(denom > 0, denom, 1)  # a row with no key and no sink: weights 0
    attn_weights = e / denom
    p_sink = e_sink / denom
    if infinite:  # +inf sink: exp(sink - m) / denom -> 1, every weight -> 0
        attn_weights = np.where(taken, 0, attn_weights).astype(attn_scores.dtype, copy=False)
        p_sink = np.where(taken, 1, p_sink).astype(attn_scores.dtype, copy=False)
    # the caller gets attn_weights and may change it: the cache keeps its own copy
    # (npattn/_guard.py); sdpa_forward, which returns no weights, skips it (copy=False)
    kept = _guard.private(attn_weights, attn_weights) if copy else _guard.readonly(attn_weights)
    return attn_weights, (kept, p_sink, given_shape)


def softmax_with_sink_backward(dattn_weights, cache):
    """Gradients w.r.t. the scores and the sinks, steps 3 -> 1.

    Shapes: dattn_weights (..., L, S) -> dattn_scores (..., L, S), dsinks (the sinks' shape).
    """
    attn_weights, p_sink, sinks_shape = cache
    dattn_weights = as_grad(dattn_weights, attn_weights.shape, attn_weights.dtype)
    # 3.-2. the softmax of [scores, sink] has the usual backward p * (dp - sum(dp * p)), where
    #       the dropped sink column has dp = 0, so the sum runs over the kept columns only:
    dot = np.sum(dattn_weights * attn_weights, axis=-1, keepdims=True)  # (..., L, 1)
    dattn_scores = attn_weights * (dattn_weights - dot)  # (..., L, S)
    dsink = -p_sink * dot  # (..., L, 1): p_sink * (0 - dot)
    # 1. m is a constant shift: no gradient. The sink was broadcast over (..., L): sum back
    if len(sinks_shape) == 1:  # (H,): heads on axis -3
        dsinks = dsink.sum(axis=tuple(i for i in range(dsink.ndim) if i != dsink.ndim - 3))
    else:
        dsinks = _sum_to_shape(dsink, sinks_shape)
    return dattn_scores, dsinks.reshape(sinks_shape)


def _sum_to_shape(g: np.ndarray, shape: tuple) -> np.ndarray:
    """The adjoint of broadcasting `shape` up to g.shape."""
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g
