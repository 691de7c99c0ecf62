"""Exercise: the backward of logit soft-capping (Gemma 2)."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def softcap_backward(scores, dout, cap):
    """Backward of out = cap * tanh(scores / cap).

    Shapes: scores (..., L, S), dout (..., L, S), cap a float > 0 -> dscores (..., L, S).
    """
    raise NotImplementedError("write the soft-cap backward")
'''

HINTS = (
    "Two steps: t = tanh(scores / cap), out = cap * t. Walk them backwards.",
    "d tanh(u) / du = 1 - tanh(u)**2.",
    "dt = cap * dout, then dscores = dt * (1 - t**2) / cap: the cap cancels.",
)


def softcap_backward(scores, dout, cap):
    t = np.tanh(scores / cap)
    return dout * (1 - t * t)


def reference(scores, dout, cap):
    _, cache = F.softcap_forward(scores, cap)
    return (F.softcap_backward(dout, cache),)


def make_inputs(p, rng):
    shape = (p["B"], p["H"])[2 - p["lead"] :] + (p["L"], p["S"])  # 0 to 2 leading axes
    return {
        "scores": rng.standard_normal(shape) * (40.0 if p["big"] else 3.0),
        "dout": rng.standard_normal(shape),
        "cap": (2.0, 5.0, 30.0)[p["cap"]],
    }


@mistake(
    "times_cap",
    "multiplied by cap",
    "Differentiate cap * tanh(scores / cap) with the chain rule and count the factors of cap,"
    " the outer one and the one from the inner division: yours keeps one too many.",
)
def _times_cap(scores, dout, cap):
    return softcap_backward(scores, dout, cap) * cap


@mistake(
    "over_cap",
    "divided by cap",
    "The outer multiplication by cap also has a derivative: cap * (1 / cap) = 1.",
)
def _over_cap(scores, dout, cap):
    return softcap_backward(scores, dout, cap) / cap


@mistake(
    "tanh_not_squared",
    "1 - tanh instead of 1 - tanh**2",
    "Check the derivative of tanh(u): it can be written with tanh(u) itself, but it is not 1 "
    "- tanh(u).",
)
def _tanh_not_squared(scores, dout, cap):
    return dout * (1 - np.tanh(scores / cap))


@mistake(
    "cap_forgotten_inside",
    "tanh(scores) instead of tanh(scores / cap)",
    "The forward was tanh(scores / cap): the derivative is taken at scores / cap.",
)
def _cap_forgotten_inside(scores, dout, cap):
    return dout * (1 - np.tanh(scores) ** 2)


EXERCISE = Exercise(
    name="softcap_backward",
    title="Soft-capping backward",
    part="beyond",
    docs="modern/softcap.md",
    args=("scores", "dout", "cap"),
    outputs=("dscores",),
    stub=STUB,
    hints=HINTS,
    solution=softcap_backward,
    reference=reference,
    make_inputs=make_inputs,
    params={
        "lead": (0, 2),
        "B": (1, 2),
        "H": (1, 2),
        "L": (1, 3),
        "S": (1, 4),
        "cap": (0, 2),
        "big": (0, 1),
    },
    mistakes=(_times_cap, _over_cap, _tanh_not_squared, _cap_forgotten_inside),
)
