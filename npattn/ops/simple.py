"""Stage 1 of the chapter: attention with no trainable weights (section 3.3).

Shapes: inputs (T, d) or (B, T, d); query (d,).
The loops are the chapter's first, explicit form; `simple_attention_forward` is the same
computation as three matrix lines. (It is also q = k = v = x in scaled dot-product attention
with scale 1, but it needs none of that machinery: tests/test_simple.py checks the equality.)
"""

from __future__ import annotations

import numpy as np

from .. import _grad, _guard
from .._checks import as_float_array, as_grad, check_ndim
from .softmax import softmax, softmax_backward


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
    Returns (context_vecs, attn_weights, cache) with cache = (x, attn_weights), or None under
    npattn.no_grad().
    """
    x = as_float_array(inputs, "inputs")
    check_ndim(x, "inputs", (2, 3), "(T, d) or (B, T, d)")
    if 0 in x.shape[-2:]:
        raise ValueError(f"inputs needs T >= 1 tokens and d >= 1: shape (T, d), got {x.shape}")
    # x plays the queries, the keys and the values at once; no 1/sqrt(d) scaling yet
    attn_scores = x @ np.swapaxes(x, -1, -2)  # 1. (..., T, d) @ (..., d, T) -> (..., T, T)
    attn_weights = softmax(attn_scores, axis=-1)  # 2. each row sums to 1      (..., T, T)
    context_vecs = attn_weights @ x  # 3. (..., T, T) @ (..., T, d) -> (..., T, d)
    # the cache keeps a private x and read-only weights (the caller sees them): npattn/_guard.py
    cache = (_guard.private(x, inputs), _guard.readonly(attn_weights))
    return context_vecs, attn_weights, _grad.keep(cache)


def simple_attention_backward(dcontext_vecs, cache):
    """dL/dinputs, steps 3 -> 1. x is used three times (as values, queries and keys), so dx
    has three terms.

    Shapes: dcontext_vecs (..., T, d) -> dinputs (..., T, d).
    """
    x, attn_weights = _grad.require(cache, "simple_attention_backward")
    dcontext_vecs = as_grad(dcontext_vecs, x.shape, x.dtype, "dcontext_vecs")
    # 3. context_vecs = attn_weights @ x
    dattn_weights = dcontext_vecs @ np.swapaxes(x, -1, -2)  # (..., T, d) @ (..., d, T)
    dx = np.swapaxes(attn_weights, -1, -2) @ dcontext_vecs  # term 1: x as the values
    # 2. attn_weights = softmax(attn_scores)
    dattn_scores = softmax_backward(dattn_weights, attn_weights, axis=-1)  # (..., T, T)
    # 1. attn_scores = x @ x^T: row i of x is query i, and column j of x^T is key j
    dx += dattn_scores @ x  # term 2: x as the queries   (..., T, T) @ (..., T, d)
    dx += np.swapaxes(dattn_scores, -1, -2) @ x  # term 3: x as the keys
    return dx


def simple_self_attention(x):
    """The chapter's first self-attention: (context_vecs, attn_weights) for x, no weights.

    Shapes: x (T, d) or (B, T, d) -> context_vecs (same as x), attn_weights (..., T, T).
    """
    context_vecs, attn_weights, _ = simple_attention_forward(x)
    return context_vecs, attn_weights
