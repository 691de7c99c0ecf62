"""Exercise (chapter 3.5.1's first method): the backward of masking weights and renormalising."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def mask_renormalize_backward(attn_weights, mask, dout):
    """Backward of: masked = attn_weights * mask; out = masked / masked.sum(-1), where a row
    with nothing left (sum 0) gives out = 0 instead of NaN.

    Shapes: attn_weights (..., T, S), mask (T, S) boolean (True = keep), dout (..., T, S)
    -> dattn_weights (..., T, S).
    """
    raise NotImplementedError("write the backward of mask-and-renormalise")
'''

HINTS = (
    "Recompute the forward first: masked, its row sums r (..., T, 1), and out = masked / r.",
    "out = masked / r with r = sum(masked) is a softmax-like normalisation: "
    "dmasked = (dout - sum(dout * out, -1)) / r.",
    "Then masked = attn_weights * mask sends no gradient to the masked entries; a row whose "
    "sum is 0 must not divide by 0 (use r = 1 there: its out is 0 anyway).",
)


def mask_renormalize_backward(attn_weights, mask, dout):
    masked = attn_weights * mask  # (..., T, S)
    r = masked.sum(axis=-1, keepdims=True)  # (..., T, 1)
    r = np.where(r == 0, 1.0, r)  # a fully masked row: out = 0, no NaN
    out = masked / r
    dmasked = (dout - np.sum(dout * out, axis=-1, keepdims=True)) / r
    return dmasked * mask


def reference(attn_weights, mask, dout):
    _, cache = F.mask_renormalize_forward(attn_weights, mask)
    return (F.mask_renormalize_backward(dout, cache),)


def make_inputs(p, rng):
    T, S = p["T"], p["S"]
    shape = (p["B"], p["H"])[2 - p["lead"] :] + (T, S)  # 0 to 2 leading axes
    attn_weights = F.softmax(rng.standard_normal(shape))
    mask = F.causal_mask(T, S) & (rng.random((T, S)) > 0.2 * p["holes"])
    if p["masked_row"]:
        mask[0] = False  # a row with nothing left
    return {"attn_weights": attn_weights, "mask": mask, "dout": rng.standard_normal(shape)}


def _forward(attn_weights, mask):
    masked = attn_weights * mask
    r = masked.sum(axis=-1, keepdims=True)
    return masked, np.where(r == 0, 1.0, r)


@mistake(
    "mask_not_applied",
    "the masked entries get a gradient",
    "The masked weights did not reach the output: multiply the gradient by the mask at the end.",
)
def _mask_not_applied(attn_weights, mask, dout):
    masked, r = _forward(attn_weights, mask)
    return (dout - np.sum(dout * masked / r, axis=-1, keepdims=True)) / r


@mistake(
    "row_sum_ignored",
    "the row sum is treated as a constant",
    "The row sum r depends on every kept weight of its row, so each output moves when any "
    "kept weight moves. Dividing dout by r covers only the direct path: the path through r "
    "adds a term shared by the whole row.",
)
def _row_sum_ignored(attn_weights, mask, dout):
    _, r = _forward(attn_weights, mask)
    return dout / r * mask


@mistake(
    "renormalisation_ignored",
    "the renormalisation is left out",
    "The forward divides each row by its sum: the backward must go back through that "
    "division, both the direct path and the path through the sum.",
)
def _renormalisation_ignored(attn_weights, mask, dout):
    return dout * mask


@mistake(
    "nan_on_empty_rows",
    "a fully masked row divides by 0",
    "A row with every entry masked has sum 0: use 1 in its place (its output is 0), not NaN.",
)
def _nan_on_empty_rows(attn_weights, mask, dout):
    masked = attn_weights * mask
    r = masked.sum(axis=-1, keepdims=True)
    return (dout - np.sum(dout * masked / r, axis=-1, keepdims=True)) / r * mask


EXERCISE = Exercise(
    name="mask_renormalize_backward",
    title="Mask-and-renormalise backward",
    part="backward",
    docs="backward/masks.md",
    args=("attn_weights", "mask", "dout"),
    outputs=("dattn_weights",),
    stub=STUB,
    hints=HINTS,
    solution=mask_renormalize_backward,
    reference=reference,
    make_inputs=make_inputs,
    params={
        "lead": (0, 2),
        "B": (1, 2),
        "H": (1, 2),
        "T": (1, 4),
        "S": (1, 5),
        "holes": (0, 1),
        "masked_row": (0, 1),
    },
    mistakes=(_mask_not_applied, _row_sum_ignored, _renormalisation_ignored, _nan_on_empty_rows),
)
