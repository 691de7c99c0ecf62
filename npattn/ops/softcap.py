"""Logit soft-capping (Gemma 2): scores are squashed smoothly into (-cap, cap).

Shapes: scores (..., L, S) -> out (..., L, S).

Forward:
    1. t   = tanh(scores / cap)     (..., L, S)
    2. out = cap * t                (..., L, S)
Backward: d tanh(u) / du = 1 - tanh(u)**2, and the 1 / cap and cap cancel.
"""

from __future__ import annotations

import numpy as np

from .. import _grad
from .._checks import as_float_array, as_grad, check_real


def check_softcap(softcap) -> float | None:
    """None (no capping) or a finite float > 0, else a named error."""
    if softcap is None:
        return None
    softcap = check_real(softcap, "softcap", "a float > 0 or None")
    if not (np.isfinite(softcap) and softcap > 0):
        raise ValueError(f"softcap must be a finite float > 0, got {softcap}")
    return softcap


def softcap_forward(scores, cap: float):
    """out = cap * tanh(scores / cap).

    Shapes: scores (..., L, S) -> out (..., L, S). Returns (out, cache) with cache = (t,).
    """
    scores = as_float_array(scores, "scores")
    cap = scores.dtype.type(check_softcap(cap))
    # 1. t = tanh(scores / cap)
    t = np.tanh(scores / cap)
    # 2. out = cap * t
    out = cap * t
    return out, _grad.keep((t,))  # t: (..., L, S); None under npattn.no_grad()


def softcap_backward(dout, cache):
    """dscores = dout * (1 - t**2).

    Shapes: dout (..., L, S) -> dscores (..., L, S).
    """
    (t,) = _grad.require(cache, "softcap_backward")
    dout = as_grad(dout, t.shape, t.dtype)
    # 2. out = cap * t            -> dt = cap * dout
    # 1. t = tanh(scores / cap)   -> dscores = dt * (1 - t**2) / cap
    return dout * (1 - t * t)
