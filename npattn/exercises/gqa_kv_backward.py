"""Exercise: the backward of GQA's key/value head repetition."""

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def gqa_kv_backward(dk_repeated, num_kv_groups):
    """Backward of repeating each of G key heads for H / G query heads, as
    torch.repeat_interleave(k, H // G, dim=1) does: heads 0 .. H/G - 1 use key head 0, etc.

    Shapes: dk_repeated (B, H, S, E), num_kv_groups G (H divisible by G) -> dk (B, G, S, E).
    """
    raise NotImplementedError("write the GQA key/value backward")
'''

HINTS = (
    "A value used in several places gets the sum of their gradients.",
    "Key head g was copied to query heads g * (H // G) .. (g + 1) * (H // G) - 1: consecutive "
    "heads, not every G-th head.",
    "dk_repeated.reshape(B, G, H // G, S, E).sum(axis=2).",
)


def gqa_kv_backward(dk_repeated, num_kv_groups):
    B, H, S, E = dk_repeated.shape
    G = num_kv_groups
    return dk_repeated.reshape(B, G, H // G, S, E).sum(axis=2)  # sum each group's copies


def reference(dk_repeated, num_kv_groups):
    return (F.repeat_kv_backward(dk_repeated, dk_repeated.shape[1] // num_kv_groups),)


def make_inputs(p, rng):
    G, H = p["G"], p["G"] * p["rep"]
    return {
        "dk_repeated": rng.standard_normal((p["B"], H, p["S"], p["E"])),
        "num_kv_groups": G,
    }


@mistake(
    "tiled_grouping",
    "heads grouped as repeat/tile (every G-th head)",
    "repeat_interleave"
    " puts a key head's copies next to each other: reshape to (B, G, H // G, S, E), not "
    "(B, H // G, G, S, E).",
)
def _tiled_grouping(dk_repeated, num_kv_groups):
    B, H, S, E = dk_repeated.shape
    return dk_repeated.reshape(B, H // num_kv_groups, num_kv_groups, S, E).sum(axis=1)


@mistake(
    "mean_over_group",
    "the group's gradients averaged",
    "Each copy contributes its whole gradient to the loss: sum them, do not average.",
)
def _mean_over_group(dk_repeated, num_kv_groups):
    B, H, S, E = dk_repeated.shape
    return dk_repeated.reshape(B, num_kv_groups, H // num_kv_groups, S, E).mean(axis=2)


@mistake(
    "first_copy_only",
    "only the first copy's gradient",
    "Every query head of the group used the key head: add all H // G gradients.",
)
def _first_copy_only(dk_repeated, num_kv_groups):
    return dk_repeated[:, :: dk_repeated.shape[1] // num_kv_groups]


EXERCISE = Exercise(
    name="gqa_kv_backward",
    title="Grouped-query attention: the key/value backward",
    part="beyond",
    docs="modern/gqa.md",
    args=("dk_repeated", "num_kv_groups"),
    outputs=("dk",),
    stub=STUB,
    hints=HINTS,
    solution=gqa_kv_backward,
    reference=reference,
    make_inputs=make_inputs,
    params={"B": (1, 2), "G": (1, 3), "rep": (1, 3), "S": (1, 3), "E": (1, 2)},
    mistakes=(_tiled_grouping, _mean_over_group, _first_copy_only),
)
