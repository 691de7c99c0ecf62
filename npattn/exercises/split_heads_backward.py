"""Exercise: the backward of splitting d_out into heads, (B, T, d_out) -> (B, H, T, E)."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def split_heads_backward(dout):
    """Backward of the split x.view(B, T, H, E).transpose(1, 2): (B, T, d_out) -> (B, H, T, E).

    Shapes: dout (B, H, T, E) -> dx (B, T, H * E).
    """
    raise NotImplementedError("write the head-split backward")
'''

HINTS = (
    "A reshape and a transpose move numbers without changing them: the backward moves them back.",
    "Undo the steps in reverse order: first the transpose (swap H and T back), then the reshape.",
    "dout.transpose(0, 2, 1, 3) is (B, T, H, E); reshape it to (B, T, H * E).",
)


def split_heads_backward(dout):
    B, H, T, E = dout.shape
    return dout.transpose(0, 2, 1, 3).reshape(B, T, H * E)  # (B, H, T, E) -> (B, T, H*E)


def reference(dout):
    B, H, T, E = dout.shape
    _, cache = F.split_heads_forward(np.zeros((B, T, H * E)), H)
    return (F.split_heads_backward(dout, cache),)


def make_inputs(p, rng):
    return {"dout": rng.standard_normal((p["B"], p["H"], p["T"], p["E"]))}


@mistake(
    "reshape_only",
    "a reshape without the transpose",
    "dout is (B, H, T, E): reshaping "
    "it straight to (B, T, H * E) mixes tokens and heads. Transpose H and T back first.",
)
def _reshape_only(dout):
    B, H, T, E = dout.shape
    return dout.reshape(B, T, H * E)


@mistake(
    "heads_inside",
    "head and feature axes swapped",
    "Within d_out, head h owns the "
    "columns h * E .. h * E + E - 1: the order is (H, E), not (E, H).",
)
def _heads_inside(dout):
    B, H, T, E = dout.shape
    return dout.transpose(0, 2, 3, 1).reshape(B, T, H * E)


@mistake(
    "not_reshaped",
    "the heads are not merged back",
    "The forward's input was (B, T, d_out): after the transpose, reshape to (B, T, H * E).",
)
def _not_reshaped(dout):
    return dout.transpose(0, 2, 1, 3)


EXERCISE = Exercise(
    name="split_heads_backward",
    title="Head split backward",
    part="backward",
    docs="backward/heads.md",
    args=("dout",),
    outputs=("dx",),
    stub=STUB,
    hints=HINTS,
    solution=split_heads_backward,
    reference=reference,
    make_inputs=make_inputs,
    params={"B": (1, 2), "H": (1, 3), "T": (1, 4), "E": (1, 3)},
    mistakes=(_reshape_only, _heads_inside, _not_reshaped),
)
