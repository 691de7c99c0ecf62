"""What the kit reports: the examples it draws, a disagreement, and its error classes.

Two kinds of failure never mix:
- KitSetupError (a ValueError and a TypeError): the check could not be set up, e.g. a weight map
  that misses a parameter, a forward with the wrong signature, a function given as a module.
  ConfigurationMismatchError, a subclass, when module and reference are built differently
  (heads, key-value groups, head dim, window). The message says what to change.
- ReferenceMismatchError (an AssertionError): the check ran and the numbers disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class KitSetupError(ValueError, TypeError):
    """The check cannot run as called; the message says what to fix."""


class ConfigurationMismatchError(KitSetupError):
    """Module and reference are configured differently (num_heads, num_kv_groups, ...)."""


class UnmappedParameterWarning(UserWarning):
    """Some of the module's parameters are never read by the weight map, so never compared."""


class StructuralSizeWarning(UserWarning):
    """A window, cache length or tile of the reference lies past the tokens drawn."""


@dataclass(frozen=True)
class Example:
    """One generated case: x = default_rng(seed).standard_normal((batch, tokens, d_in)),
    then the upstream gradient from the same generator. Drawn only for a forward that takes
    positions and key_padding_mask: positions from `start`, and pads[b] padding tokens on
    the left of row b (positions then cumsum(mask) - 1, as generate() makes them). x is
    multiplied by `scale` (4 or 8 in some examples: large logits, where a softmax that does
    not subtract its row max overflows)."""

    batch: int
    tokens: int
    seed: int
    start: int = 0
    pads: tuple = ()
    scale: float = 1.0


@dataclass(frozen=True, eq=False)
class Mismatch:
    """The first disagreement: what differed, on which input, and by how much.

    error: the normwise error ||got - truth|| / ||truth|| (NaN when got holds a NaN);
    allowed: the bound it broke (see torch_port.testing.precision).
    """

    quantity: str  # "output", "dx", "grad[c_attn.weight]", "step 2 output", or "exception"
    example: object  # Example, DecodeExample or SDPAExample
    shape: tuple
    max_abs_error: float
    detail: str
    error: float = math.inf
    allowed: float = 0.0

    def __str__(self) -> str:
        return f"{self.quantity} disagrees on {describe(self.example)}: {self.detail}"

    def _key(self) -> tuple:  # NaN errors compare equal, so a replayed NaN case matches
        return tuple("NaN" if v != v else v for v in vars(self).values())

    def __eq__(self, other) -> bool:
        return isinstance(other, Mismatch) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def describe(example) -> str:
    """The input an example builds, in words."""
    if isinstance(example, Example):
        text = f"x of shape (B={example.batch}, T={example.tokens}, d_in) from seed {example.seed}"
        if example.start:
            text += f", positions from {example.start}"
        if any(example.pads):
            text += f", left padding {list(example.pads)}"
        if example.scale != 1.0:
            text += f", scaled by {example.scale:g}"
        return text
    return str(example)


class ReferenceMismatchError(AssertionError):
    """Raised by the assert_* functions; `.mismatch` holds the Mismatch."""

    def __init__(self, message: str, mismatch: Mismatch):
        super().__init__(message)
        self.mismatch = mismatch


def fmt(value: float) -> str:
    """A number for a report: NaN and inf as such, never as a huge finite stand-in."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.3g}"
