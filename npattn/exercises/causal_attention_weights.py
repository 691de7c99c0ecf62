"""Exercise (chapter 3.5): causal attention weights, the future masked out before the softmax."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def causal_attention_weights(attn_scores):
    """Mask the scores above the diagonal (token i may attend keys j <= i), then softmax.

    Shapes: attn_scores (..., T, T), already scaled -> attn_weights (..., T, T); each row
    sums to 1 over its first i + 1 entries, and is 0 after them.
    """
    raise NotImplementedError("write the causal softmax")
'''

HINTS = (
    "The mask is np.triu(ones((T, T)), k=1): True above the diagonal, the future.",
    "Set the masked scores to -np.inf: exp(-inf) = 0, so the softmax gives them weight 0 and "
    "the other weights of the row still sum to 1.",
    "The diagonal itself is kept: a token always attends to itself.",
)


def causal_attention_weights(attn_scores):
    T = attn_scores.shape[-1]
    future = np.triu(np.ones((T, T), dtype=bool), k=1)  # (T, T), True above the diagonal
    masked = np.where(future, -np.inf, attn_scores)
    masked = masked - masked.max(axis=-1, keepdims=True)  # the diagonal is finite: no NaN
    e = np.exp(masked)
    return e / e.sum(axis=-1, keepdims=True)


def reference(attn_scores):
    T = attn_scores.shape[-1]
    masked, _ = F.mask_scores_forward(attn_scores, F.causal_mask(T))
    return (F.softmax(masked),)


def make_inputs(p, rng):
    scores = rng.standard_normal((p["B"], p["H"])[2 - p["lead"] :] + (p["T"], p["T"])) * (
        30.0 if p["big"] else 1.0
    )
    return {"attn_scores": scores}


@mistake(
    "diagonal_masked",
    "the diagonal is masked too",
    "np.triu(..., k=1) keeps the diagonal: token i attends to itself.",
)
def _diagonal_masked(attn_scores):
    T = attn_scores.shape[-1]
    masked, _ = F.mask_scores_forward(attn_scores, F.causal_mask(T) & ~np.eye(T, dtype=bool))
    return F.softmax(masked)


@mistake(
    "zero_not_minus_inf",
    "masked scores set to 0 instead of -inf",
    "exp(0) = 1, so a score of 0 still gets weight; -inf gets exactly 0.",
)
def _zero_not_minus_inf(attn_scores):
    return F.softmax(attn_scores * F.causal_mask(attn_scores.shape[-1]))


@mistake(
    "masked_after_softmax",
    "masked after the softmax, without renormalising",
    "Zeroing "
    "weights after the softmax leaves rows that sum to less than 1: mask the scores "
    "before the softmax (or renormalise each row).",
)
def _masked_after_softmax(attn_scores):
    return F.softmax(attn_scores) * F.causal_mask(attn_scores.shape[-1])


@mistake(
    "future_kept",
    "the past is masked instead of the future",
    "Query i may see keys "
    "j <= i: the mask is True above the diagonal (np.triu(..., k=1)), not below.",
)
def _future_kept(attn_scores):
    T = attn_scores.shape[-1]
    masked, _ = F.mask_scores_forward(attn_scores, F.causal_mask(T).T)
    return F.softmax(masked)


EXERCISE = Exercise(
    name="causal_attention_weights",
    title="Causal attention weights",
    part="chapter3",
    docs="stages/causal.md",
    args=("attn_scores",),
    outputs=("attn_weights",),
    stub=STUB,
    hints=HINTS,
    solution=causal_attention_weights,
    reference=reference,
    make_inputs=make_inputs,
    params={"lead": (0, 2), "B": (1, 2), "H": (1, 2), "T": (1, 5), "big": (0, 1)},
    mistakes=(_diagonal_masked, _zero_not_minus_inf, _masked_after_softmax, _future_kept),
)
