"""Scaled dot-product attention with torch's semantics, and its backward.

Shape legend: L query tokens, S key tokens, E head dim of q and k, Ev head dim of v, and any
leading batch dims (...), e.g. (B, H). With enable_gqa (grouped-query attention), k and v have
Hkv heads on axis -3, each serving Hq // Hkv query heads.

Forward (the step numbers are walked backwards in sdpa_backward and in docs/backward/sdpa.md):
    0. GQA: k, v    = each key/value head repeated for its group of query heads
    1. attn_scores  = (q * scale) @ k^T                    (..., L, S)
    1b. attn_scores = softcap * tanh(attn_scores / softcap), when softcap is given
    2. attn_scores  = masked: -inf where a boolean mask is False, + a float mask
    3. attn_weights = softmax(attn_scores), with each head's sink logit in the denominator
                      when sinks are given (ops/sinks.py)   (..., L, S)
    4. dropped      = attn_weights * keep / (1 - p)        (..., L, S)
    5. out          = dropped @ v                          (..., L, Ev)
Argument checks live in npattn/_checks.py, so what follows is the maths.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _grad, _guard
from .._checks import (
    as_grad,
    check_attn_mask,
    check_dropout_mask,
    check_probability,
    check_scale,
    check_sdpa_inputs,
)
from .dropout import dropout_keep_mask
from .heads import repeat_kv, repeat_kv_backward
from .masks import causal_mask
from .sinks import check_sinks, softmax_with_sink_backward, softmax_with_sink_forward
from .softcap import check_softcap, softcap_backward, softcap_forward
from .softmax import softmax_backward, softmax_inplace


class SDPACache(NamedTuple):
    q: np.ndarray  # (..., L, E); q, k, v are None under npattn.no_grad() (no backward)
    k: np.ndarray  # (..., S, E), after step 0 (a copy only with GQA groups > 1)
    v: np.ndarray  # (..., S, Ev), after step 0
    attn_weights: np.ndarray  # (..., L, S), softmax output before dropout
    keep: np.ndarray | None  # boolean keep-mask broadcastable to (..., L, S), None without dropout
    dropout_scale: float  # 1 / (1 - p)
    scale: float
    gqa_groups: int  # Hq // Hkv; 1 without GQA
    softcap_cache: tuple | None = None  # (tanh(scores / softcap) (..., L, S),) or None
    sink_cache: tuple | None = None  # softmax_with_sink_forward's cache, or None


def apply_attn_mask(attn_scores, attn_mask):
    """Step 2: -inf where a boolean mask (True = attend) is False, or add a float mask.

    Shapes: attn_scores (..., L, S), attn_mask (checked) broadcastable to it, or None.
    """
    if attn_mask is None:
        return attn_scores
    if attn_mask.dtype == np.bool_:
        return np.where(attn_mask, attn_scores, -np.inf).astype(attn_scores.dtype, copy=False)
    return attn_scores + attn_mask.astype(attn_scores.dtype, copy=False)


def sdpa_forward(
    q,
    k,
    v,
    attn_mask=None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    rng=None,
    dropout_mask=None,
    softcap: float | None = None,
    sinks=None,
):
    """torch.nn.functional.scaled_dot_product_attention, returning (out, cache).

    Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev); attn_mask broadcastable to
    (..., L, S), boolean (True = attend) or float (added); dropout_mask boolean keep-mask
    broadcastable to (..., L, S) -> out (..., L, Ev). A fully masked row gives 0.
    Dropout is applied whenever dropout_p > 0, as in torch: pass 0.0 in eval mode.
    Beyond torch: softcap c > 0 caps the scores to c * tanh(scores / c) before the mask
    (Gemma 2); sinks (H,) or broadcastable to (..., L, 1) adds one logit per head to each
    row's softmax denominator (gpt-oss), and sdpa_backward then also returns dsinks.
    The cache keeps private, read-only q, k, v, keep-mask and weights (npattn/_guard.py).
    Under npattn.no_grad() it keeps only what it shows (attn_weights, the keep-mask): q, k
    and v are None, nothing is copied, and sdpa_backward raises.
    """
    given = (q, k, v)
    q, k, v, groups = check_sdpa_inputs(q, k, v, enable_gqa)
    softcap = check_softcap(softcap)
    dropout_p = check_probability(dropout_p, "dropout_p")
    scale = check_scale(scale, q.shape[-1])
    dtype = q.dtype
    # 0. GQA: repeat each key/value head for its group   (..., Hkv, S, E) -> (..., Hq, S, E)
    k, v = repeat_kv(k, groups), repeat_kv(v, groups)
    L, S = q.shape[-2], k.shape[-2]
    scores_shape = np.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (L, S)
    attn_mask = check_attn_mask(attn_mask, is_causal, scores_shape)
    keep = check_dropout_mask(dropout_mask, dropout_p, scores_shape)
    if sinks is not None:  # checked here too, so that a mismatch names query and key
        check_sinks(sinks, scores_shape, "query @ key^T")
    # 1. attn_scores = (q * scale) @ k^T           (..., L, E) @ (..., E, S) -> (..., L, S)
    #    q is scaled first: the same scores as (q @ k^T) * scale, but the unscaled sum of E
    #    products never forms, so float16 does not overflow where the scaled score fits
    #    (docs/numerics.md); it is also L * E multiplications instead of L * S
    attn_scores = (q * dtype.type(scale)) @ np.swapaxes(k, -1, -2)
    # 1b. soft-capping, before the mask (ops/softcap.py)
    softcap_cache = None
    if softcap is not None:
        attn_scores, softcap_cache = softcap_forward(attn_scores, softcap)
    # 2. masking: the causal mask is top-left aligned, query i sees keys j <= i
    if is_causal:
        attn_mask = causal_mask(L, S)  # (L, S), True = attend
    attn_scores = apply_attn_mask(attn_scores, attn_mask)
    # 3. attn_weights = softmax(attn_scores)        (..., L, S)
    sink_cache = None
    if sinks is not None:  # the sink joins each row's denominator (ops/sinks.py)
        attn_weights, sink_cache = softmax_with_sink_forward(attn_scores, sinks, copy=False)
    else:
        attn_weights = softmax_inplace(attn_scores, axis=-1)  # step 1 or 2 made a new array
    # 4. dropout on the weights (inverted: kept weights scaled by 1 / (1 - p))   (..., L, S)
    dropout_scale = 1.0 / (1.0 - dropout_p) if dropout_p < 1.0 else 0.0  # p = 1 drops all
    if keep is None and dropout_p > 0.0:
        keep = dropout_keep_mask(attn_weights.shape, dropout_p, rng)  # True = kept
    dropped = attn_weights if keep is None else attn_weights * keep * dtype.type(dropout_scale)
    # 5. out = dropped @ v                          (..., L, S) @ (..., S, Ev) -> (..., L, Ev)
    out = dropped @ v
    if not _grad.is_grad_enabled():
        # no backward can follow: only the shown weights and keep-mask
        q = k = v = softcap_cache = sink_cache = None
    # the caller may change q, k, v or the keep-mask later: the cache keeps its own copies
    q, k, v = (_guard.private(a, *given) for a in (q, k, v))
    keep = _guard.private(keep, dropout_mask)
    cache = SDPACache(
        q,
        k,
        v,
        _guard.readonly(attn_weights),
        keep,
        dropout_scale,
        scale,
        groups,
        softcap_cache,
        sink_cache,
    )
    return out, cache


def sdpa_backward(dout, cache: SDPACache):
    """Gradients of sdpa_forward w.r.t. q, k and v (and the sinks, when given), steps 5 -> 0.

    Shapes: dout (..., L, Ev) -> dq (..., L, E), dk (..., S, E), dv (..., S, Ev), in the
    shapes q, k and v were given (GQA heads and broadcast batch dims summed back).
    Returns (dq, dk, dv), or (dq, dk, dv, dsinks) when the forward was given sinks
    (dsinks in the sinks' shape).
    """
    if cache is None or cache.q is None:
        _grad.require(None, "sdpa_backward")
    q, k, v, attn_weights, keep, dropout_scale, scale, groups, softcap_cache, sink_cache = cache
    dtype = q.dtype
    out_shape = np.broadcast_shapes(attn_weights.shape[:-2], v.shape[:-2]) + (
        attn_weights.shape[-2],
        v.shape[-1],
    )
    dout = as_grad(dout, out_shape, dtype)
    # 4. dropped is recomputed rather than stored (one (..., L, S) array less in the cache):
    #    the same line as the forward's, so the same numbers
    dropped = attn_weights if keep is None else attn_weights * keep * dtype.type(dropout_scale)
    # 5. out = dropped @ v
    ddropped = dout @ np.swapaxes(v, -1, -2)  # (..., L, Ev) @ (..., Ev, S) -> (..., L, S)
    dv = np.swapaxes(dropped, -1, -2) @ dout  # (..., S, L) @ (..., L, Ev) -> (..., S, Ev)
    # 4. dropped = attn_weights * keep / (1 - p): the same mask and scale
    dattn_weights = ddropped if keep is None else ddropped * keep * dtype.type(dropout_scale)
    # 3. attn_weights = softmax(attn_scores); masked entries have weight 0, so 0 gradient
    if sink_cache is not None:
        dattn_scores, dsinks = softmax_with_sink_backward(dattn_weights, sink_cache)
    else:
        dattn_scores = softmax_backward(dattn_weights, attn_weights, axis=-1)
    # 2. masking: -inf entries get dattn_scores = 0 from step 3; a float mask passes it through
    # 1b. soft-capping
    if softcap_cache is not None:
        dattn_scores = softcap_backward(dattn_scores, softcap_cache)
    # 1. attn_scores = (q * scale) @ k^T; q * scale is recomputed (L * E), not stored
    dq = dattn_scores @ k  # (..., L, S) @ (..., S, E) -> (..., L, E)
    dq *= dtype.type(scale)
    dk = np.swapaxes(dattn_scores, -1, -2) @ (q * dtype.type(scale))  # (.., S, L) @ (.., L, E)
    # undo the broadcasting of batch dims: each input's gradient sums over what it was reused for
    dq = sum_to_shape(dq, q.shape)
    dk = sum_to_shape(dk, k.shape)
    dv = sum_to_shape(dv, v.shape)
    # 0. GQA: the adjoint of repeating sums each group   (..., Hq, S, E) -> (..., Hkv, S, E)
    dk, dv = repeat_kv_backward(dk, groups), repeat_kv_backward(dv, groups)
    return (dq, dk, dv) if sink_cache is None else (dq, dk, dv, dsinks)


def sum_to_shape(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a broadcast gradient back down to `shape` (the adjoint of broadcasting)."""
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def scaled_dot_product_attention(
    q,
    k,
    v,
    attn_mask=None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    rng=None,
    dropout_mask=None,
    softcap: float | None = None,
    sinks=None,
):
    """Forward only; the same arguments as sdpa_forward.

    Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev) -> out (..., L, Ev).
    """
    out, _ = sdpa_forward(
        q,
        k,
        v,
        attn_mask,
        dropout_p,
        is_causal,
        scale,
        enable_gqa,
        rng=rng,
        dropout_mask=dropout_mask,
        softcap=softcap,
        sinks=sinks,
    )
    return out
