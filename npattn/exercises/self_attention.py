"""Exercise (chapter 3.4): self-attention with trainable weights, in torch's Linear layout."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def self_attention(x, W_query, W_key, W_value):
    """SelfAttention_v2's forward: project x to queries, keys and values (torch layout,
    queries = x @ W_query.T), scaled dot-product scores, softmax, weighted sum of values.

    Shapes: x (T, d_in); W_query, W_key, W_value (d_out, d_in) -> context_vec (T, d_out).
    No mask, no dropout.
    """
    raise NotImplementedError("write self-attention with trainable weights")
'''

HINTS = (
    "queries, keys, values = x @ W_query.T, x @ W_key.T, x @ W_value.T, each (T, d_out).",
    "attn_scores = queries @ keys.T, scaled by 1 / sqrt(d_k) where d_k = keys.shape[-1] "
    "(d_out, not d_in).",
    "A stable softmax along the last axis, then attn_weights @ values.",
)


def self_attention(x, W_query, W_key, W_value):
    queries, keys, values = x @ W_query.T, x @ W_key.T, x @ W_value.T  # (T, d_out) each
    attn_scores = queries @ keys.T / np.sqrt(keys.shape[-1])  # (T, T)
    attn_scores -= attn_scores.max(axis=-1, keepdims=True)
    attn_weights = np.exp(attn_scores)
    attn_weights /= attn_weights.sum(axis=-1, keepdims=True)
    return attn_weights @ values  # (T, d_out)


def _project(x, W_query, W_key, W_value):
    return (F.linear_forward(x, W)[0] for W in (W_query, W_key, W_value))


def reference(x, W_query, W_key, W_value):
    return (F.scaled_dot_product_attention(*_project(x, W_query, W_key, W_value)),)


def make_inputs(p, rng):
    d_in, d_out = p["d_in"], p["d_out"]
    x = rng.standard_normal((p["T"], d_in))
    Ws = [rng.standard_normal((d_out, d_in)) * (3.0 if p["big"] else 0.5) for _ in range(3)]
    return dict(zip(("x", "W_query", "W_key", "W_value"), [x, *Ws]))


@mistake(
    "no_scale",
    "the scores are not scaled",
    "Divide the scores by sqrt(d_k) before the "
    "softmax, or large d_k makes the softmax nearly one-hot.",
)
def _no_scale(x, W_query, W_key, W_value):
    return F.scaled_dot_product_attention(*_project(x, W_query, W_key, W_value), scale=1.0)


@mistake(
    "scale_by_d",
    "the scores are divided by d_k, not sqrt(d_k)",
    "The scale is 1 / sqrt(d_k): it keeps the variance of a dot product of d_k terms near 1.",
)
def _scale_by_d(x, W_query, W_key, W_value):
    q, k, v = _project(x, W_query, W_key, W_value)
    return F.scaled_dot_product_attention(q, k, v, scale=1.0 / k.shape[-1])


@mistake(
    "scale_by_d_in",
    "the scale uses d_in instead of d_out",
    "d_k is the size of a key, keys.shape[-1] = d_out, not the input size d_in.",
)
def _scale_by_d_in(x, W_query, W_key, W_value):
    q, k, v = _project(x, W_query, W_key, W_value)
    return F.scaled_dot_product_attention(q, k, v, scale=1.0 / np.sqrt(x.shape[-1]))


@mistake(
    "softmax_over_queries",
    "the softmax runs over the queries (axis 0)",
    "Each query's weights over the keys are a row: softmax along axis=-1.",
)
def _softmax_over_queries(x, W_query, W_key, W_value):
    q, k, v = _project(x, W_query, W_key, W_value)
    return F.softmax(q @ k.T / np.sqrt(k.shape[-1]), axis=0) @ v


EXERCISE = Exercise(
    name="self_attention",
    title="Self-attention with trainable weights",
    part="chapter3",
    docs="stages/trainable.md",
    args=("x", "W_query", "W_key", "W_value"),
    outputs=("context_vec",),
    stub=STUB,
    hints=HINTS,
    solution=self_attention,
    reference=reference,
    make_inputs=make_inputs,
    params={"T": (1, 5), "d_in": (1, 4), "d_out": (1, 4), "big": (0, 1)},
    mistakes=(_no_scale, _scale_by_d, _scale_by_d_in, _softmax_over_queries),
)
