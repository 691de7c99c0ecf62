"""Scaled dot-product attention with torch's semantics, and its backward.

Shape legend: L query tokens, S key tokens, E head dim of q and k, Ev head dim of v, and any
leading batch dims (...), e.g. (B, H). With enable_gqa, k and v have Hkv heads on axis -3 and
are repeated to the Hq heads of q.

Forward (the step numbers are walked backwards in sdpa_backward and in docs/backward/sdpa.md):
    1. attn_scores  = (q * scale) @ k^T                    (..., L, S)
    2. attn_scores  = masked: -inf where a boolean mask is False, + a float mask
    3. attn_weights = softmax(attn_scores)                 (..., L, S)
    4. dropped      = attn_weights * keep / (1 - p)        (..., L, S)
    5. out          = dropped @ v                          (..., L, Ev)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _guard
from .._checks import (
    as_array,
    as_float_array,
    as_grad,
    check_bool,
    check_min_ndim,
    check_probability,
    check_scale,
)
from .dropout import check_keep_mask, dropout_backward, dropout_forward
from .masks import causal_mask
from .softmax import softmax_backward, softmax_inplace


class SDPACache(NamedTuple):
    q: np.ndarray  # (..., L, E)
    k: np.ndarray  # (..., S, E), after GQA repetition (a copy only when groups > 1)
    v: np.ndarray  # (..., S, Ev), after GQA repetition
    attn_weights: np.ndarray  # (..., L, S), softmax output before dropout
    dropout_cache: tuple  # (keep (..., L, S) or None, 1 / (1 - p), shape)
    scale: float
    gqa_groups: int  # Hq // Hkv; 1 without GQA


def sum_to_shape(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a broadcast gradient back down to `shape` (the adjoint of broadcasting)."""
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _repeat_kv(x: np.ndarray, groups: int) -> np.ndarray:
    """GQA: (..., Hkv, S, E) -> (..., Hkv * groups, S, E), like torch.repeat_interleave(dim=-3)."""
    return np.repeat(x, groups, axis=-3) if groups > 1 else x


def _unrepeat_kv(g: np.ndarray, groups: int) -> np.ndarray:
    """Adjoint of _repeat_kv: sum each group of heads. (..., Hq, S, E) -> (..., Hkv, S, E)."""
    if groups == 1:
        return g
    *lead, hq, s, e = g.shape
    return g.reshape(*lead, hq // groups, groups, s, e).sum(axis=-3)


def _check_inputs(q, k, v, enable_gqa):
    q = as_float_array(q, "query")
    k = as_float_array(k, "key")
    v = as_float_array(v, "value")
    check_min_ndim(q, "query", 2, "(..., L, E)")
    check_min_ndim(k, "key", 2, "(..., S, E)")
    check_min_ndim(v, "value", 2, "(..., S, Ev)")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"query and key must share the head dim E: query (..., L, {q.shape[-1]}), "
            f"key (..., S, {k.shape[-1]})"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"key and value must have the same number of tokens S: key {tuple(k.shape)}, "
            f"value {tuple(v.shape)}"
        )
    for name, a, dims in (("query", q, "L, E"), ("key", k, "S, E"), ("value", v, "S, Ev")):
        if 0 in a.shape[-2:]:  # empty batch dims are fine: empty outputs, as in torch
            raise ValueError(
                f"{name} needs at least one token and a head dim >= 1: shape (..., {dims}), "
                f"got {a.shape}"
            )
    dtype = np.result_type(q.dtype, k.dtype, v.dtype)
    q, k, v = (a.astype(dtype, copy=False) for a in (q, k, v))
    groups = 1
    if check_bool(enable_gqa, "enable_gqa"):
        if q.ndim < 3 or k.ndim < 3 or v.ndim < 3:
            raise ValueError("enable_gqa needs heads on axis -3: shapes (..., H, L, E)")
        hq, hk, hv = q.shape[-3], k.shape[-3], v.shape[-3]
        if hk != hv or hq % hk:
            raise ValueError(
                f"enable_gqa needs key and value heads equal and dividing the query heads: "
                f"query has {hq}, key {hk}, value {hv}"
            )
        groups = hq // hk
    for name, a in (("key", k), ("value", v)):
        batch = a.shape[:-2]  # (..., H) of k or v; GQA multiplies H by the group size
        if groups > 1:
            batch = batch[:-1] + (batch[-1] * groups,)
        try:
            np.broadcast_shapes(q.shape[:-2], batch)
        except ValueError:
            raise ValueError(
                f"batch dims of query {tuple(q.shape[:-2])} and {name} {tuple(a.shape[:-2])} "
                f"do not broadcast"
            ) from None
    return q, k, v, groups


def check_attn_mask(attn_mask, is_causal: bool, scores_shape: tuple):
    """Step 2's argument checks: the mask as an array broadcastable to scores_shape, or None.

    Shapes: attn_mask broadcastable to scores_shape (..., L, S), boolean or floating.
    """
    if check_bool(is_causal, "is_causal") and attn_mask is not None:
        raise ValueError("is_causal=True cannot be combined with attn_mask; pass one of them")
    if attn_mask is None:
        return None
    attn_mask = as_array(attn_mask, "attn_mask")
    try:
        shape = np.broadcast_shapes(attn_mask.shape, scores_shape)
    except ValueError:
        shape = None
    if shape != tuple(scores_shape):
        raise ValueError(
            f"attn_mask of shape {tuple(attn_mask.shape)} must broadcast to the attention "
            f"scores' shape {tuple(scores_shape)} (..., L, S)"
        )
    if attn_mask.dtype != np.bool_ and not np.issubdtype(attn_mask.dtype, np.floating):
        raise TypeError(f"attn_mask must be boolean or floating, got dtype {attn_mask.dtype}")
    return attn_mask


def apply_attn_mask(scores, attn_mask):
    """Step 2: -inf where a boolean mask (True = attend) is False, or add a float mask.

    Shapes: scores (..., L, S), attn_mask (checked) broadcastable to it, or None.
    """
    if attn_mask is None:
        return scores
    if attn_mask.dtype == np.bool_:
        return np.where(attn_mask, scores, -np.inf).astype(scores.dtype, copy=False)
    return scores + attn_mask.astype(scores.dtype, copy=False)


def _mask_scores(scores, attn_mask, is_causal):
    """Step 2: apply a boolean (True = attend) or float (added) mask, or the causal mask."""
    attn_mask = check_attn_mask(attn_mask, is_causal, scores.shape)
    if is_causal:
        attn_mask = causal_mask(*scores.shape[-2:])  # (L, S), top-left aligned
    return apply_attn_mask(scores, attn_mask)


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
):
    """torch.nn.functional.scaled_dot_product_attention, returning (out, cache).

    Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev); attn_mask broadcastable to
    (..., L, S), boolean (True = attend) or float (added); dropout_mask boolean keep-mask
    broadcastable to (..., L, S) -> out (..., L, Ev). A fully masked row gives 0.
    Dropout is applied whenever dropout_p > 0, as in torch: pass 0.0 in eval mode.
    The cache keeps private, read-only q, k, v and weights (npattn/_guard.py).
    """
    given = (q, k, v)
    q, k, v, groups = _check_inputs(q, k, v, enable_gqa)
    dropout_p = check_probability(dropout_p, "dropout_p")
    if dropout_mask is not None and dropout_p == 0.0:
        raise ValueError("dropout_mask needs dropout_p > 0 (it is scaled by 1 / (1 - dropout_p))")
    k, v = _repeat_kv(k, groups), _repeat_kv(v, groups)  # (..., Hkv, S, E) -> (..., Hq, S, E)
    scale = check_scale(scale, q.shape[-1])
    # 1. attn_scores = (q * scale) @ k^T           (..., L, E) @ (..., E, S) -> (..., L, S)
    #    q is scaled first: the same scores as (q @ k^T) * scale, but the unscaled sum of E
    #    products never forms, so float16 does not overflow where the scaled score fits
    #    (docs/numerics.md); it is also L * E multiplications instead of L * S
    attn_scores = (q * q.dtype.type(scale)) @ np.swapaxes(k, -1, -2)
    # 2. masking
    attn_scores = _mask_scores(attn_scores, attn_mask, is_causal)
    # 3. attn_weights = softmax(attn_scores)        (..., L, S)
    attn_weights = softmax_inplace(attn_scores, axis=-1)  # masking made a new array or none
    # 4. dropout on the weights                     (..., L, S)
    if dropout_mask is not None:
        dropout_mask = check_keep_mask(
            dropout_mask, attn_weights.shape, "dropout_mask", "the attention weights"
        )
    dropped, dropout_cache = dropout_forward(attn_weights, dropout_p, rng=rng, keep=dropout_mask)
    # 5. out = dropped @ v                          (..., L, S) @ (..., S, Ev) -> (..., L, Ev)
    out = dropped @ v
    q, k, v = (_guard.private(a, *given) for a in (q, k, v))  # copies where the caller holds them
    cache = SDPACache(q, k, v, _guard.readonly(attn_weights), dropout_cache, scale, groups)
    return out, cache


def sdpa_backward(dout, cache: SDPACache):
    """Gradients of sdpa_forward w.r.t. q, k and v, steps 5 -> 1.

    Shapes: dout (..., L, Ev) -> dq (..., L, E), dk (..., S, E), dv (..., S, Ev), in the
    shapes q, k and v were given (GQA heads and broadcast batch dims summed back).
    """
    q, k, v, attn_weights, dropout_cache, scale, groups = cache
    out_shape = np.broadcast_shapes(attn_weights.shape[:-2], v.shape[:-2]) + (
        attn_weights.shape[-2],
        v.shape[-1],
    )
    dout = as_grad(dout, out_shape, q.dtype)
    # 4. dropped = attn_weights * keep / (1 - p) is recomputed rather than stored: dropout is
    #    linear and elementwise, so applying its backward to attn_weights gives the forward.
    dropped = dropout_backward(attn_weights, dropout_cache)
    # 5. out = dropped @ v
    ddropped = dout @ np.swapaxes(v, -1, -2)  # (..., L, Ev) @ (..., Ev, S) -> (..., L, S)
    dv = np.swapaxes(dropped, -1, -2) @ dout  # (..., S, L) @ (..., L, Ev) -> (..., S, Ev)
    # 4. dropped = attn_weights * keep / (1 - p)
    dattn_weights = dropout_backward(ddropped, dropout_cache)
    # 3. attn_weights = softmax(attn_scores); masked entries have weight 0, so 0 gradient
    dattn_scores = softmax_backward(dattn_weights, attn_weights, axis=-1)
    # 2. masking: -inf entries get dattn_scores = 0 from step 3; a float mask passes it through
    # 1. attn_scores = (q * scale) @ k^T; q * scale is recomputed (L * E), not stored
    dq = dattn_scores @ k  # (..., L, S) @ (..., S, E) -> (..., L, E)
    dq *= q.dtype.type(scale)
    dk = np.swapaxes(dattn_scores, -1, -2) @ (q * q.dtype.type(scale))  # (..., S, L) @ (.., L, E)
    # undo broadcasting of batch dims, then sum the GQA groups: (..., Hq, S, E) -> (..., Hkv, S, E)
    dq = sum_to_shape(dq, q.shape)
    dk = _unrepeat_kv(sum_to_shape(dk, k.shape), groups)
    dv = _unrepeat_kv(sum_to_shape(dv, v.shape), groups)
    return dq, dk, dv


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
    )
    return out
