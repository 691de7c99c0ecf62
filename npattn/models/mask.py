"""Mask: which keys each query sees, described rather than drawn.

A causal layer lets the query in slot i (its place in the token order, cached tokens
included) see the key in slot j when 0 <= i - j, and, with a window W, i - j < W; key padding
hides the keys of padding tokens. The reference path draws this as a boolean array
(`dense`); the tiled path asks the description about each block instead, so no (T, S) array
is formed.

The order of the tokens decides the mask, not their RoPE positions, as in transformers: with
left padding the positions restart at 0 after the padding while the slots do not, and both
give the same causal order among the real tokens.

Shape legend: B batch, T queries (slots q_start .. q_start + T - 1), S keys (slots
k_start .. k_start + S - 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..modules._kv import attention_mask


@dataclass(frozen=True)
class Mask:
    """Causal (and windowed) by slot, and key padding.

    Shapes: padding (B, S) boolean, True = a real key, or None.
    """

    q_start: int
    T: int
    k_start: int
    S: int
    causal: bool = True
    window: int | None = None
    padding: np.ndarray | None = None

    @property
    def full(self) -> bool:
        """Queries and keys are the same slots 0 .. T - 1 (a full forward, no cache), or
        nothing is causal (cross-attention): the cases the tiled path describes."""
        same = self.q_start == 0 and self.k_start == 0 and self.T == self.S
        return same or not self.causal

    def dense(self) -> np.ndarray | None:
        """The mask as a boolean array, True = attend, or None when every key is seen.

        Shapes: -> (T, S), or (B, 1, T, S) with padding.
        """
        if self.causal:  # the modules' own causal (windowed) mask at these slots
            return attention_mask(self.q_start, self.T, self.k_start, self.S, self.window,
                                  self.padding)  # fmt: skip
        return None if self.padding is None else self.padding[:, None, None, :]  # (B,1,1,S)
