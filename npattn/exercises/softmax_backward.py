"""Exercise: the softmax backward, dx from the output y and the upstream gradient dy."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def softmax_backward(y, dy):
    """dL/dx of y = softmax(x) along the last axis, from the output y and dL/dy.

    Shapes: y (..., n), dy (..., n) -> dx (..., n). Rows of y that are all 0 (fully masked
    rows) must give dx = 0.
    """
    raise NotImplementedError("write the softmax backward")
'''

HINTS = (
    "Write the Jacobian of one row first: dy_i/dx_j = y_i (delta_ij - y_j).",
    "Multiply dy by that Jacobian: dx_j = sum_i dy_i y_i (delta_ij - y_j). One term is y_j dy_j,"
    " the other is y_j times a sum over the whole row.",
    "The sum is one number per row: keep its axis (keepdims=True) so it broadcasts back "
    "over the row.",
)


def softmax_backward(y, dy):
    dot = np.sum(dy * y, axis=-1, keepdims=True)  # (..., 1): one number per row
    return y * (dy - dot)  # (..., n)


def reference(y, dy):
    return (F.softmax_backward(dy, y),)


def make_inputs(p, rng):
    shape = (p["B"], p["L"])[2 - p["lead"] :] + (p["n"],)  # 0 to 2 leading axes
    x = rng.standard_normal(shape) * (30.0 if p["big"] else 1.0)  # large logits: y near one-hot
    if p["masked_row"]:
        x[(0,) * p["lead"]] = -np.inf  # a fully masked row: y = 0 there
    return {"y": F.softmax(x), "dy": rng.standard_normal(shape)}


@mistake(
    "diagonal_only",
    "only the diagonal of the Jacobian",
    "Every y_i depends on every x_j "
    "through the row's sum: the off-diagonal terms -y_i y_j are missing.",
)
def _diagonal_only(y, dy):
    return y * (1 - y) * dy


@mistake(
    "missing_row_sum",
    "the row-sum term is missing",
    "y * dy is only the diagonal of the Jacobian. Each x_j also moves every other y_i of its "
    "row through the shared denominator: that coupling adds a second term, built from a sum "
    "over the row.",
)
def _missing_row_sum(y, dy):
    return y * dy


@mistake(
    "sum_wrong_axis",
    "the sum runs over the wrong axis",
    "The softmax normalises along "
    "the last axis, so the sum of dy * y runs along axis=-1, keepdims=True.",
)
def _sum_wrong_axis(y, dy):
    return y * (dy - np.sum(dy * y, axis=-2, keepdims=True))


@mistake(
    "sign_flipped",
    "the sign is flipped",
    "The row-sum term and dy enter with opposite signs, and yours are the wrong way round. "
    "Write out the Jacobian's diagonal and off-diagonal entries and see which one carries the"
    " minus sign.",
)
def _sign_flipped(y, dy):
    return y * (np.sum(dy * y, axis=-1, keepdims=True) - dy)


@mistake(
    "dy_sum",
    "sum(dy) instead of sum(dy * y)",
    "The row term weights each dy_i by y_i: sum(dy * y), not sum(dy).",
)
def _dy_sum(y, dy):
    return y * (dy - np.sum(dy, axis=-1, keepdims=True))


EXERCISE = Exercise(
    name="softmax_backward",
    title="Softmax backward",
    part="backward",
    docs="backward/softmax.md",
    args=("y", "dy"),
    outputs=("dx",),
    stub=STUB,
    hints=HINTS,
    solution=softmax_backward,
    reference=reference,
    make_inputs=make_inputs,
    params={
        "lead": (0, 2),
        "B": (1, 2),
        "L": (1, 4),
        "n": (1, 5),
        "big": (0, 1),
        "masked_row": (0, 1),
    },
    mistakes=(_diagonal_only, _missing_row_sum, _sum_wrong_axis, _sign_flipped, _dy_sum),
)
