"""Exercise: the backward of inverted dropout, with the forward's keep-mask."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def dropout_backward(dout, keep, p):
    """Backward of inverted dropout, out = x * keep / (1 - p).

    Shapes: dout (...), keep (...) boolean (True = kept), p a float in (0, 1) -> dx (...).
    """
    raise NotImplementedError("write the dropout backward")
'''

HINTS = (
    "The forward is elementwise and linear in x: dx is dout times d out / d x.",
    "d out / d x is keep / (1 - p): 1 / (1 - p) where the value was kept, 0 where dropped.",
    "Use the very same keep-mask as the forward, and the same scale 1 / (1 - p).",
)


def dropout_backward(dout, keep, p):
    return dout * keep / (1.0 - p)


def reference(dout, keep, p):
    _, cache = F.dropout_forward(np.zeros_like(dout), p, keep=keep)
    return (F.dropout_backward(dout, cache),)


def make_inputs(p, rng):
    shape = (p["B"], p["T"])[2 - p["lead"] :] + (p["S"],)  # 1 to 3 axes
    prob = p["p10"] / 10
    return {"dout": rng.standard_normal(shape), "keep": rng.random(shape) >= prob, "p": prob}


@mistake(
    "no_scale",
    "the 1 / (1 - p) scale is missing",
    "Kept values were scaled up by "
    "1 / (1 - p) in the forward; their gradient is scaled the same way.",
)
def _no_scale(dout, keep, p):
    return dout * keep


@mistake(
    "scale_by_1_minus_p",
    "scaled by (1 - p) instead of 1 / (1 - p)",
    "Inverted dropout divides by the keep probability 1 - p.",
)
def _scale_by_1_minus_p(dout, keep, p):
    return dout * keep * (1.0 - p)


@mistake(
    "scale_by_p",
    "scaled by 1 / p instead of 1 / (1 - p)",
    "p is the probability of dropping; a value is kept with probability 1 - p.",
)
def _scale_by_p(dout, keep, p):
    return dout * keep / p


@mistake(
    "mask_inverted",
    "the gradient flows through the dropped entries",
    "keep is True "
    "where the value was kept: the gradient goes there, and is 0 where it was dropped.",
)
def _mask_inverted(dout, keep, p):
    return dout * ~keep / (1.0 - p)


EXERCISE = Exercise(
    name="dropout_backward",
    title="Dropout backward",
    part="backward",
    docs="backward/dropout.md",
    args=("dout", "keep", "p"),
    outputs=("dx",),
    stub=STUB,
    hints=HINTS,
    solution=dropout_backward,
    reference=reference,
    make_inputs=make_inputs,
    params={"lead": (0, 2), "B": (1, 2), "T": (1, 4), "S": (1, 4), "p10": (1, 9)},
    mistakes=(_no_scale, _scale_by_1_minus_p, _scale_by_p, _mask_inverted),
)
