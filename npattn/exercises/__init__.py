"""Exercises: write each forward and backward pass yourself, and let a checker say what is wrong.

    from npattn.exercises import check

    def softmax_backward(y, dy):
        ...

    print(check("softmax_backward", softmax_backward))

Each exercise (one file in this package) has a stub with the exact signature and shapes, graded
hints, a reference solution (`solution(name)`), and a catalogue of usual mistakes the checker
recognises by name. From the command line: `python -m npattn exercises list | start | hint |
check | solution`. The checker needs hypothesis (`pip install 'npattn[exercises]'`); importing
this package does not.
"""

from __future__ import annotations

import importlib

from ._check import Result, check
from ._core import PARTS, Exercise, Mistake

# the docs' order: chapter 3, the backward passes, then beyond chapter 3
NAMES = (
    "simple_attention",
    "self_attention",
    "causal_attention_weights",
    "softmax_backward",
    "linear_backward",
    "mask_renormalize_backward",
    "dropout_backward",
    "split_heads_backward",
    "sdpa_backward",
    "masked_sdpa_backward",
    "mha_backward",
    "online_softmax_attention",
    "tiled_sdpa_backward",
    "rope_backward",
    "rmsnorm_backward",
    "gqa_kv_backward",
    "softcap_backward",
    "sinks_backward",
    "kv_decode_step",
    "mla_absorbed_weights",
)


def get(name: str) -> Exercise:
    """The exercise called `name`; ValueError listing the names otherwise."""
    if name not in NAMES:
        raise ValueError(f"unknown exercise {name!r}; the exercises are: {', '.join(NAMES)}")
    return importlib.import_module(f".{name}", __name__).EXERCISE


def all_exercises() -> list:
    """Every exercise, in the docs' order."""
    return [get(n) for n in NAMES]


def hint(name: str, level: int = 1) -> str:
    """Hint number `level` (1 = gentlest) of exercise `name`."""
    hints = get(name).hints
    if not 1 <= level <= len(hints):
        raise ValueError(f"{name} has hints 1 to {len(hints)}, got level {level}")
    return hints[level - 1]


def solution(name: str) -> str:
    """The reference solution's source, for when you ask for it."""
    return get(name).solution_source


__all__ = ["NAMES", "PARTS", "Exercise", "Mistake", "Result", "all_exercises", "check", "get"]
__all__ += ["hint", "solution"]
