"""What an exercise is: a stub to fill, hints, a reference, inputs, and the usual mistakes.

An exercise's inputs come from a few integer parameters (sizes, a seed, switches such as
"large logits" or "fully masked rows"), so the checker's search can shrink a failing input to
the smallest one: fewer tokens, fewer heads, switches off, seed 0.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parents[2] / "docs"


@dataclass(frozen=True)
class Mistake:
    """A named wrong implementation the checker can recognise in a student's outputs."""

    id: str
    name: str
    hint: str
    fn: Callable


@dataclass(frozen=True)
class Exercise:
    """One exercise: the student writes `name(*args)` returning `outputs`.

    params: {name: (low, high)} integer ranges the inputs are drawn from; `seed` is added.
    make_inputs(p, rng) -> {arg: value} in the order of `args`; reference(**inputs) -> tuple
    of float64 arrays, one per output, computed by npattn's own ops.
    """

    name: str
    title: str
    part: str  # "chapter3", "backward" or "beyond"
    docs: str  # a page under docs/
    args: tuple
    outputs: tuple
    stub: str
    hints: tuple
    solution: Callable
    reference: Callable
    make_inputs: Callable
    params: dict
    mistakes: tuple = field(default_factory=tuple)

    def inputs(self, p: dict) -> dict:
        """The inputs of parameters p (their seed included), fresh arrays on every call."""
        return self.make_inputs(p, np.random.default_rng(p["seed"]))

    @property
    def solution_source(self) -> str:
        return "import numpy as np\n\n\n" + textwrap.dedent(inspect.getsource(self.solution))

    @property
    def stub_source(self) -> str:
        return textwrap.dedent(self.stub).lstrip("\n")

    def docs_path(self) -> Path:
        return DOCS / self.docs


PARTS = {
    "chapter3": "Chapter 3: attention forward",
    "backward": "Backward passes",
    "beyond": "Beyond chapter 3",
}


def mistake(id: str, name: str, hint: str):
    """Decorator: turn a wrong implementation into a catalogued Mistake."""

    def wrap(fn):
        return Mistake(id, name, hint, fn)

    return wrap
