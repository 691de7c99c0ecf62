"""The chapter's running example: "Your journey starts with one step", embedded in 3 dims.

Shapes: CHAPTER_INPUTS (T=6, d_in=3); chapter_batch() (B=2, T=6, d_in=3).
This is the canonical copy; tests/chapter_ch03.py keeps the book's own transcription, and
tests/test_data.py checks that the two agree.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_float_dtype

TOKENS = ("Your", "journey", "starts", "with", "one", "step")

# one row per token, x^(1) .. x^(6), as the chapter writes them (immutable on purpose)
CHAPTER_INPUTS = (
    (0.43, 0.15, 0.89),  # Your     (x^1)
    (0.55, 0.87, 0.66),  # journey  (x^2)
    (0.57, 0.85, 0.64),  # starts   (x^3)
    (0.22, 0.58, 0.33),  # with     (x^4)
    (0.77, 0.25, 0.10),  # one      (x^5)
    (0.05, 0.80, 0.55),  # step     (x^6)
)

# the seeds the chapter passes to torch.manual_seed before building each class
SEEDS = {
    "SelfAttention_v1": 123,
    "SelfAttention_v2": 789,
    "CausalAttention": 123,
    "MultiHeadAttentionWrapper": 123,
    "MultiHeadAttention": 123,
    "dropout": 123,
}

QUERY_INDEX = 1  # the chapter's query x^(2), "journey" (0-based row 1)


def chapter_inputs(dtype=np.float32) -> np.ndarray:
    """A fresh (6, 3) array of the inputs, float32 like the chapter's torch.tensor.

    Shapes: -> (T=6, d_in=3).
    """
    return np.array(CHAPTER_INPUTS, dtype=check_float_dtype(dtype))  # ints would truncate


def chapter_batch(dtype=np.float32) -> np.ndarray:
    """The chapter's batch, torch.stack((inputs, inputs), dim=0).

    Shapes: -> (B=2, T=6, d_in=3).
    """
    inputs = chapter_inputs(dtype)
    return np.stack((inputs, inputs), axis=0)  # 2 x (6, 3) -> (2, 6, 3)
