"""Exercise (chapter 3.3): attention with no trainable weights, every token attending to all."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def simple_attention(inputs):
    """The chapter's simplified self-attention: scores are dot products of the inputs, the
    weights their softmax over each row, and each context vector the weighted sum of inputs.

    Shapes: inputs (T, d) -> context_vecs (T, d). No scaling, no mask.
    """
    raise NotImplementedError("write the simplified self-attention")
'''

HINTS = (
    "Three lines: attn_scores, attn_weights, context_vecs (section 3.3.2).",
    "attn_scores = inputs @ inputs.T is (T, T): row i holds query i's scores for every token.",
    "Normalise each row with a softmax (subtract the row max, exp, divide by the row sum), "
    "then context_vecs = attn_weights @ inputs.",
)


def simple_attention(inputs):
    attn_scores = inputs @ inputs.T  # (T, d) @ (d, T) -> (T, T)
    attn_scores = attn_scores - attn_scores.max(axis=-1, keepdims=True)  # stable softmax
    attn_weights = np.exp(attn_scores)
    attn_weights /= attn_weights.sum(axis=-1, keepdims=True)  # each row sums to 1
    return attn_weights @ inputs  # (T, T) @ (T, d) -> (T, d)


def reference(inputs):
    return (F.simple_self_attention(inputs)[0],)


def make_inputs(p, rng):
    inputs = rng.standard_normal((p["T"], p["d"])) * (10.0 if p["big"] else 1.0)
    return {"inputs": inputs}


@mistake(
    "no_softmax",
    "the scores are used without a softmax",
    "The weights must be "
    "positive and sum to 1 over each row: take the softmax of the scores first.",
)
def _no_softmax(inputs):
    return (inputs @ inputs.T) @ inputs


@mistake(
    "sum_normalised",
    "scores divided by their sum instead of a softmax",
    "Dividing by "
    "the row sum is the chapter's first try; it fails for negative scores. Use the "
    "softmax.",
)
def _sum_normalised(inputs):
    s = inputs @ inputs.T
    return (s / s.sum(axis=-1, keepdims=True)) @ inputs


@mistake(
    "softmax_over_columns",
    "the softmax runs down the columns",
    "Each query's weights are one row of the (T, T) matrix: normalise along axis=-1, not axis=0.",
)
def _softmax_over_columns(inputs):
    return F.softmax(inputs @ inputs.T, axis=0) @ inputs


@mistake(
    "scaled",
    "the scores are scaled by 1/sqrt(d)",
    "Simplified attention has no scale;"
    " the 1/sqrt(d_k) comes with trainable weights in section 3.4.",
)
def _scaled(inputs):
    return F.softmax(inputs @ inputs.T / np.sqrt(inputs.shape[-1])) @ inputs


@mistake(
    "naive_softmax",
    "the softmax overflows",
    "exp of a large score is inf, and inf / inf is NaN: subtract each row's max before the exp.",
)
def _naive_softmax(inputs):
    return F.softmax_naive(inputs @ inputs.T) @ inputs


EXERCISE = Exercise(
    name="simple_attention",
    title="Simplified self-attention",
    part="chapter3",
    docs="stages/simple.md",
    args=("inputs",),
    outputs=("context_vecs",),
    stub=STUB,
    hints=HINTS,
    solution=simple_attention,
    reference=reference,
    make_inputs=make_inputs,
    params={"T": (1, 5), "d": (1, 4), "big": (0, 1)},
    mistakes=(_no_softmax, _sum_normalised, _softmax_over_columns, _scaled, _naive_softmax),
)
