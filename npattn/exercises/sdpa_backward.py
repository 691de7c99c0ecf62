"""Exercise: the backward of scaled dot-product attention (no mask, no dropout)."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def sdpa_backward(q, k, v, dout):
    """Gradients of out = softmax(q @ k^T / sqrt(E)) @ v, the softmax over the keys.

    Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev), dout (..., L, Ev)
    -> dq (..., L, E), dk (..., S, E), dv (..., S, Ev). L and S may differ; the leading
    axes (...) (batch, heads) may be absent or several.
    """
    raise NotImplementedError("write the attention backward")
'''

HINTS = (
    "Recompute the forward: attn_scores = q @ k^T * scale, attn_weights = softmax(scores), "
    "out = attn_weights @ v. Then walk it backwards, one step at a time.",
    "out = P @ v gives dP = dout @ v^T and dv = P^T @ dout (swap the last two axes with "
    "np.swapaxes(a, -1, -2), not .T, which reverses every axis).",
    "Softmax backward: dS = P * (dP - sum(dP * P, -1)). Then the scores: dq = dS @ k * scale "
    "and dk = dS^T @ q * scale.",
)


def sdpa_backward(q, k, v, dout):
    scale = 1.0 / np.sqrt(q.shape[-1])
    kT = np.swapaxes(k, -1, -2)  # (..., E, S)
    scores = q @ kT * scale  # (..., L, S)
    P = np.exp(scores - scores.max(axis=-1, keepdims=True))
    P /= P.sum(axis=-1, keepdims=True)  # attn_weights (..., L, S)
    dP = dout @ np.swapaxes(v, -1, -2)  # (..., L, Ev) @ (..., Ev, S) -> (..., L, S)
    dv = np.swapaxes(P, -1, -2) @ dout  # (..., S, L) @ (..., L, Ev) -> (..., S, Ev)
    dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True))  # softmax backward
    dq = dS @ k * scale  # (..., L, S) @ (..., S, E) -> (..., L, E)
    dk = np.swapaxes(dS, -1, -2) @ q * scale  # (..., S, L) @ (..., L, E) -> (..., S, E)
    return dq, dk, dv


def reference(q, k, v, dout):
    _, cache = F.sdpa_forward(q, k, v)
    return F.sdpa_backward(dout, cache)


def make_inputs(p, rng):
    lead = (p["B"], p["H"])[2 - p["lead"] :]
    L, S, E, Ev = p["L"], p["S"], p["E"], p["Ev"]
    big = 6.0 if p["big"] else 1.0  # large logits: nearly one-hot rows
    return {
        "q": rng.standard_normal(lead + (L, E)) * big,
        "k": rng.standard_normal(lead + (S, E)) * big,
        "v": rng.standard_normal(lead + (S, Ev)),
        "dout": rng.standard_normal(lead + (L, Ev)),
    }


def _grads(q, k, v, dout, scale):
    _, cache = F.sdpa_forward(q, k, v, scale=scale)
    return F.sdpa_backward(dout, cache)


@mistake(
    "no_scale",
    "the 1 / sqrt(E) scale is missing from dq and dk",
    "The scores were q @ k^T * scale: both dq and dk carry the scale.",
)
def _no_scale(q, k, v, dout):
    dq, dk, dv = sdpa_backward(q, k, v, dout)
    scale = 1.0 / np.sqrt(q.shape[-1])
    return dq / scale, dk / scale, dv


@mistake(
    "scale_on_dq_only",
    "dk misses the scale",
    "Both q and k meet the scale in the scores, so the gradients of both carry it: your dk "
    "does not.",
)
def _scale_on_dq_only(q, k, v, dout):
    dq, dk, dv = sdpa_backward(q, k, v, dout)
    return dq, dk * np.sqrt(q.shape[-1]), dv


@mistake(
    "scale_squared",
    "scaled by 1 / E instead of 1 / sqrt(E)",
    "The scale is 1 / sqrt(E), and it appears once in dq and once in dk.",
)
def _scale_squared(q, k, v, dout):
    dq, dk, dv = sdpa_backward(q, k, v, dout)
    scale = 1.0 / np.sqrt(q.shape[-1])
    return dq * scale, dk * scale, dv


@mistake(
    "softmax_diagonal_only",
    "the softmax backward keeps only the diagonal",
    "The softmax backward is more than P * dP: the weights of a row share one denominator, so"
    " each score moves the whole row. The term that comes from that is missing (the "
    "softmax_backward exercise is this step alone).",
)
def _softmax_diagonal_only(q, k, v, dout):
    scale = 1.0 / np.sqrt(q.shape[-1])
    _, cache = F.sdpa_forward(q, k, v)
    P = cache.attn_weights
    dS = P * (dout @ np.swapaxes(v, -1, -2))
    return dS @ k * scale, np.swapaxes(dS, -1, -2) @ q * scale, np.swapaxes(P, -1, -2) @ dout


EXERCISE = Exercise(
    name="sdpa_backward",
    title="Scaled dot-product attention backward",
    part="backward",
    docs="backward/sdpa.md",
    args=("q", "k", "v", "dout"),
    outputs=("dq", "dk", "dv"),
    stub=STUB,
    hints=HINTS,
    solution=sdpa_backward,
    reference=reference,
    make_inputs=make_inputs,
    params={
        "lead": (0, 2),
        "B": (1, 2),
        "H": (1, 3),
        "L": (1, 4),
        "S": (1, 5),
        "E": (1, 4),
        "Ev": (1, 3),
        "big": (0, 1),
    },
    mistakes=(_no_scale, _scale_on_dq_only, _scale_squared, _softmax_diagonal_only),
)
