"""Exercise: the RoPE backward, split-halves layout (Llama, Qwen)."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def rope_backward(dy, cos, sin):
    """Backward of RoPE, y = x * cos + rotate_half(x) * sin, with
    rotate_half(x) = concat(-x[..., E/2:], x[..., :E/2]) (dim i paired with dim i + E/2).

    Shapes: dy (..., T, E), cos (T, E), sin (T, E) (both halves share each angle)
    -> dx (..., T, E).
    """
    raise NotImplementedError("write the RoPE backward")
'''

HINTS = (
    "y is linear in x: dx = dy * cos + rotate_half^T(dy * sin).",
    "rotate_half is a +90 degree turn of each pair: its transpose is the -90 degree turn, "
    "-rotate_half.",
    "dx = dy * cos - rotate_half(dy * sin): the rotation by -theta undoes the one by +theta.",
)


def rope_backward(dy, cos, sin):
    half = dy.shape[-1] // 2
    g = dy * sin
    rotated = np.concatenate([-g[..., half:], g[..., :half]], axis=-1)  # rotate_half(dy * sin)
    return dy * cos - rotated


def reference(dy, cos, sin):
    _, cache = F.rope_forward(np.zeros_like(dy), cos, sin)
    return (F.rope_backward(dy, cache),)


def make_inputs(p, rng):
    T, E = p["T"], 2 * p["E2"]
    cos, sin = F.compute_rope_params(E, theta_base=p["base"] * 10.0, context_length=T)
    return {"dy": rng.standard_normal((p["B"], p["H"], T, E)), "cos": cos, "sin": sin}


@mistake(
    "forward_rotation",
    "the forward rotation (+theta) again",
    "The backward of a rotation is its transpose, a rotation by the opposite angle. Yours "
    "turns the same way as the forward: look at the sign of the term that goes through "
    "rotate_half.",
)
def _forward_rotation(dy, cos, sin):
    return dy * cos + F.rotate_half(dy) * sin


@mistake(
    "interleaved_layout",
    "the interleaved layout (pairs 2i, 2i + 1)",
    "This RoPE pairs dim i with dim i + E/2 (split halves), not neighbours.",
)
def _interleaved_layout(dy, cos, sin):
    _, cache = F.rope_forward(np.zeros_like(dy), cos, sin, interleaved=True)
    return F.rope_backward(dy, cache)


@mistake(
    "cos_only",
    "only the cos term",
    "x also reaches y through rotate_half(x) * sin: that path needs its own term in dx, sent "
    "back through the transpose of rotate_half.",
)
def _cos_only(dy, cos, sin):
    return dy * cos


@mistake(
    "sin_not_rotated",
    "the sin term is not rotated",
    "In the forward, sin multiplies "
    "rotate_half(x), not x: its gradient goes back through the rotation.",
)
def _sin_not_rotated(dy, cos, sin):
    return dy * cos - dy * sin


EXERCISE = Exercise(
    name="rope_backward",
    title="RoPE backward",
    part="beyond",
    docs="modern/rope.md",
    args=("dy", "cos", "sin"),
    outputs=("dx",),
    stub=STUB,
    hints=HINTS,
    solution=rope_backward,
    reference=reference,
    make_inputs=make_inputs,
    params={"B": (1, 2), "H": (1, 2), "T": (1, 5), "E2": (1, 3), "base": (1, 1000)},
    mistakes=(_forward_rotation, _interleaved_layout, _cos_only, _sin_not_rotated),
)
