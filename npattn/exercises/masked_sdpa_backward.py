"""Exercise: the attention backward with a boolean mask, fully masked rows included."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def masked_sdpa_backward(q, k, v, mask, dout):
    """Gradients of out = softmax(masked(q @ k^T / sqrt(E))) @ v, where masked scores
    (mask False) are -inf. A fully masked row has weights 0 and output 0 (not NaN), as in npattn.

    Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev), mask (L, S) boolean
    (True = attend), dout (..., L, Ev) -> dq (..., L, E), dk (..., S, E), dv (..., S, Ev).
    """
    raise NotImplementedError("write the masked attention backward")
'''

HINTS = (
    "Only the forward changes: scores = where(mask, q @ k^T * scale, -inf) before the softmax.",
    "A row that is all -inf has max -inf, and -inf - (-inf) is NaN: use 0 for such a row's max"
    " and 1 for its sum, so its weights are 0.",
    "The backward is the unmasked one: masked weights are 0, so dS = P * (dP - rowsum(dP * P))"
    " is 0 there by itself.",
)


def masked_sdpa_backward(q, k, v, mask, dout):
    scale = 1.0 / np.sqrt(q.shape[-1])
    scores = np.where(mask, q @ np.swapaxes(k, -1, -2) * scale, -np.inf)  # (..., L, S)
    m = scores.max(axis=-1, keepdims=True)
    m = np.where(np.isneginf(m), 0.0, m)  # a fully masked row: exp(-inf - 0) = 0
    P = np.exp(scores - m)
    s = P.sum(axis=-1, keepdims=True)
    P /= np.where(s == 0, 1.0, s)  # attn_weights (..., L, S), 0 on fully masked rows
    dP = dout @ np.swapaxes(v, -1, -2)  # (..., L, S)
    dv = np.swapaxes(P, -1, -2) @ dout  # (..., S, Ev)
    dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True))
    return dS @ k * scale, np.swapaxes(dS, -1, -2) @ q * scale, dv


def reference(q, k, v, mask, dout):
    _, cache = F.sdpa_forward(q, k, v, attn_mask=mask)
    return F.sdpa_backward(dout, cache)


def make_inputs(p, rng):
    L, S, E, Ev = p["L"], p["S"], p["E"], p["Ev"]  # Ev drawn apart from E
    lead = (p["B"], p["H"])[2 - p["lead"] :]  # 0 to 2 leading axes
    mask = F.causal_mask(L, S) & (rng.random((L, S)) > 0.3 * p["holes"])
    if p["masked_row"]:
        mask[-1] = False  # a query that sees nothing
    return {
        "q": rng.standard_normal(lead + (L, E)),
        "k": rng.standard_normal(lead + (S, E)),
        "v": rng.standard_normal(lead + (S, Ev)),
        "mask": mask,
        "dout": rng.standard_normal(lead + (L, Ev)),
    }


@mistake(
    "mask_ignored",
    "the mask is left out",
    "The forward's softmax only ran over the keys"
    " the mask allows: recompute the weights with the masked scores set to -inf.",
)
def _mask_ignored(q, k, v, mask, dout):
    _, cache = F.sdpa_forward(q, k, v)
    return F.sdpa_backward(dout, cache)


@mistake(
    "nan_on_masked_rows",
    "a fully masked row gives NaN",
    "For a row with no key, "
    "max is -inf and -inf - (-inf) is NaN: use 0 as its max and 1 as its sum.",
)
def _nan_on_masked_rows(q, k, v, mask, dout):
    scale = 1.0 / np.sqrt(q.shape[-1])
    scores = np.where(mask, q @ np.swapaxes(k, -1, -2) * scale, -np.inf)
    P = np.exp(scores - scores.max(axis=-1, keepdims=True))
    P /= P.sum(axis=-1, keepdims=True)
    dP = dout @ np.swapaxes(v, -1, -2)
    dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True))
    return dS @ k * scale, np.swapaxes(dS, -1, -2) @ q * scale, np.swapaxes(P, -1, -2) @ dout


@mistake(
    "mask_as_zero_scores",
    "masked scores set to 0 instead of -inf",
    "A score of 0 still gets weight exp(0) = 1 in the softmax: masked scores must be -inf.",
)
def _mask_as_zero_scores(q, k, v, mask, dout):
    scale = 1.0 / np.sqrt(q.shape[-1])
    P = F.softmax(q @ np.swapaxes(k, -1, -2) * scale * mask)  # masked scores are 0, not -inf
    dS = F.softmax_backward(dout @ np.swapaxes(v, -1, -2), P)
    return dS @ k * scale, np.swapaxes(dS, -1, -2) @ q * scale, np.swapaxes(P, -1, -2) @ dout


@mistake(
    "finite_fill",
    "masked scores filled with a large finite number (such as -1e9)",
    "A finite fill works while a row keeps one key, but a row with every key masked then has "
    "all its scores equal, and the softmax spreads the row evenly over keys it must not see. "
    "The docstring says such a row has weights 0: look at what your fill gives that row.",
)
def _finite_fill(q, k, v, mask, dout):
    scale = 1.0 / np.sqrt(q.shape[-1])
    P = F.softmax(np.where(mask, q @ np.swapaxes(k, -1, -2) * scale, -1e9))
    dS = F.softmax_backward(dout @ np.swapaxes(v, -1, -2), P)
    return dS @ k * scale, np.swapaxes(dS, -1, -2) @ q * scale, np.swapaxes(P, -1, -2) @ dout


EXERCISE = Exercise(
    name="masked_sdpa_backward",
    title="Masked attention backward",
    part="backward",
    docs="backward/masks.md",
    args=("q", "k", "v", "mask", "dout"),
    outputs=("dq", "dk", "dv"),
    stub=STUB,
    hints=HINTS,
    solution=masked_sdpa_backward,
    reference=reference,
    make_inputs=make_inputs,
    params={
        "lead": (0, 2),
        "B": (1, 2),
        "H": (1, 2),
        "L": (1, 4),
        "S": (1, 5),
        "E": (1, 3),
        "Ev": (1, 3),
        "holes": (0, 1),
        "masked_row": (0, 1),
    },
    mistakes=(_mask_ignored, _nan_on_masked_rows, _mask_as_zero_scores, _finite_fill),
)
