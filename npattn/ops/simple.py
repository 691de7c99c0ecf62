"""Stage 1 of the chapter: attention with no trainable weights (section 3.3).

Shapes: inputs (T, d) or (B, T, d); query (d,).
The loops are the chapter's first, explicit form; `simple_attention_forward` is the same
computation as matrix products, and is also q = k = v = x in scaled dot-product attention
with scale 1.
"""

from __future__ import annotations

import numpy as np

from .._checks import as_float_array, check_ndim
from .sdpa import sdpa_backward, sdpa_forward
from .softmax import softmax


def attn_scores_for_query(inputs, query) -> np.ndarray:
    """The chapter's loop: the dot product of one query with every input token.

    Shapes: inputs (T, d), query (d,) -> attn_scores (T,).
    """
    inputs = as_float_array(inputs, "inputs")
    check_ndim(inputs, "inputs", 2, "(T, d)")
    query = as_float_array(query, "query")
    if query.shape != inputs.shape[1:]:
        raise ValueError(f"query must have shape (d={inputs.shape[1]},), got {query.shape}")
    attn_scores = np.empty(inputs.shape[0], dtype=np.result_type(inputs, query))
    for i, x_i in enumerate(inputs):
        attn_scores[i] = np.dot(x_i, query)
    return attn_scores


def context_vector_for_query(inputs, query) -> np.ndarray:
    """The chapter's context vector z for one query: sum_i softmax(scores)_i * x_i.

    Shapes: inputs (T, d), query (d,) -> context_vec (d,).
    """
    inputs = as_float_array(inputs, "inputs")
    attn_weights = softmax(attn_scores_for_query(inputs, query))
    context_vec = np.zeros(inputs.shape[1], dtype=attn_weights.dtype)
    for i, x_i in enumerate(inputs):
        context_vec += attn_weights[i] * x_i
    return context_vec


def attn_scores_loops(inputs) -> np.ndarray:
    """The chapter's double loop over all pairs of tokens (slow on purpose).

    Shapes: inputs (T, d) -> attn_scores (T, T).
    """
    inputs = as_float_array(inputs, "inputs")
    check_ndim(inputs, "inputs", 2, "(T, d)")
    T = inputs.shape[0]
    attn_scores = np.empty((T, T), dtype=inputs.dtype)
    for i, x_i in enumerate(inputs):
        for j, x_j in enumerate(inputs):
            attn_scores[i, j] = np.dot(x_i, x_j)
    return attn_scores


def context_vectors_loops(inputs) -> np.ndarray:
    """All context vectors with explicit loops: softmax row by row, weighted sums by hand.

    Shapes: inputs (T, d) -> context_vecs (T, d).
    """
    inputs = as_float_array(inputs, "inputs")
    attn_scores = attn_scores_loops(inputs)
    context_vecs = np.zeros_like(inputs)
    for i in range(inputs.shape[0]):
        attn_weights = softmax(attn_scores[i])
        for j, x_j in enumerate(inputs):
            context_vecs[i] += attn_weights[j] * x_j
    return context_vecs


def simple_attention_forward(inputs):
    """Matrix form: attn_weights = softmax(x @ x^T), context_vecs = attn_weights @ x.

    Shapes: inputs (T, d) or (B, T, d) -> context_vecs (same), attn_weights (..., T, T).
    Returns (context_vecs, attn_weights, cache).
    """
    inputs = as_float_array(inputs, "inputs")
    check_ndim(inputs, "inputs", (2, 3), "(T, d) or (B, T, d)")
    if 0 in inputs.shape[-2:]:
        raise ValueError(f"inputs needs T >= 1 tokens and d >= 1: shape (T, d), got {inputs.shape}")
    # x plays query, key and value at once; no 1/sqrt(d) scaling yet in this stage
    context_vecs, cache = sdpa_forward(inputs, inputs, inputs, scale=1.0)
    return context_vecs, cache.attn_weights, cache


def simple_attention_backward(dcontext_vecs, cache):
    """dL/dinputs: x fed q, k and v, so its gradient is the sum of the three.

    Shapes: dcontext_vecs (..., T, d) -> dinputs (..., T, d).
    """
    dq, dk, dv = sdpa_backward(dcontext_vecs, cache)
    return dq + dk + dv  # x was the queries, the keys and the values


def simple_self_attention(x):
    """The chapter's first self-attention: (context_vecs, attn_weights) for x, no weights.

    Shapes: x (T, d) or (B, T, d) -> context_vecs (same as x), attn_weights (..., T, T).
    """
    context_vecs, attn_weights, _ = simple_attention_forward(x)
    return context_vecs, attn_weights
