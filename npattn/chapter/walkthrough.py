"""Chapter 3, stage by stage, on "Your journey starts with one step": the numbers only.

Each function is one section of the chapter, uses the chapter's variable names and returns
them in a dict; `walk()` runs them all and returns one Walkthrough, which
`python -m npattn demo` (npattn.chapter.demo) prints and npattn.chapter.plots draws.
Shapes: inputs (T=6, d_in=3), batch (B=2, T, d_in); d_out = 2 throughout, as in the chapter.
`weights` is "auto" (the chapter's torch-seeded weights when torch is installed), "torch" or
"npattn" (npattn's own seeded init; see npattn.chapter.weights).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import functional as F
from ..modules import (
    CausalAttention,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    SelfAttention_v1,
    SelfAttention_v2,
)
from .data import QUERY_INDEX, chapter_batch, chapter_inputs
from .weights import chapter_dropout_keep, chapter_module

D_OUT = 2  # the chapter's d_out
DROPOUT_P = 0.5  # section 3.5.2's example rate
NUM_HEADS = 2


def simple_attention(inputs=None) -> dict:
    """Section 3.3: attention with no trainable weights, first for x^(2), then for all."""
    inputs = chapter_inputs() if inputs is None else inputs  # (T, d_in)
    query = inputs[QUERY_INDEX]  # x^(2), (d_in,)
    attn_scores_2 = F.attn_scores_for_query(inputs, query)  # (T,) dot products
    attn_weights_2_tmp = attn_scores_2 / attn_scores_2.sum()  # plain normalisation
    attn_weights_2_naive = F.softmax_naive(attn_scores_2)
    attn_weights_2 = F.softmax(attn_scores_2)  # stable: subtracts the max first
    context_vec_2 = F.context_vector_for_query(inputs, query)  # (d_in,)
    attn_scores = inputs @ inputs.T  # (T, d_in) @ (d_in, T) -> (T, T)
    all_context_vecs, attn_weights = F.simple_self_attention(inputs)  # (T, d_in), (T, T)
    return dict(
        inputs=inputs,
        attn_scores_2=attn_scores_2,
        attn_weights_2_tmp=attn_weights_2_tmp,
        attn_weights_2_naive=attn_weights_2_naive,
        attn_weights_2=attn_weights_2,
        context_vec_2=context_vec_2,
        attn_scores_loops=F.attn_scores_loops(inputs),
        attn_scores=attn_scores,
        attn_weights=attn_weights,
        all_context_vecs=all_context_vecs,
    )


def trainable_weights(inputs=None, weights: str = "auto") -> dict:
    """Section 3.4: W_query, W_key, W_value; scaled dot products; SelfAttention_v1 / v2."""
    inputs = chapter_inputs() if inputs is None else inputs  # (T, d_in)
    d_in = inputs.shape[-1]
    sa_v1, source = chapter_module(SelfAttention_v1, d_in, D_OUT, weights=weights)
    W_query, W_key, W_value = sa_v1.W_query, sa_v1.W_key, sa_v1.W_value  # (d_in, d_out)
    x_2 = inputs[QUERY_INDEX]
    query_2 = x_2 @ W_query  # (d_in,) @ (d_in, d_out) -> (d_out,)
    keys = inputs @ W_key  # (T, d_in) @ (d_in, d_out) -> (T, d_out)
    values = inputs @ W_value  # (T, d_out)
    attn_scores_2 = query_2 @ keys.T  # (d_out,) @ (d_out, T) -> (T,)
    d_k = keys.shape[-1]
    attn_weights_2 = F.softmax(attn_scores_2 / np.sqrt(d_k, dtype=keys.dtype))
    sa_v2, _ = chapter_module(SelfAttention_v2, d_in, D_OUT, weights=weights)
    # exercise 3.1: v1 with v2's weights, transposed to v1's (d_in, d_out) layout
    v1_from_v2 = SelfAttention_v1(d_in, D_OUT, rng=0)
    v1_from_v2.load_state_dict({k: sa_v2.state_dict()[k + ".weight"].T for k in sa_v1.state_dict()})
    return dict(
        source=source,
        W_query=W_query,
        W_key=W_key,
        W_value=W_value,
        query_2=query_2,
        keys=keys,
        values=values,
        attn_score_22=query_2 @ keys[QUERY_INDEX],
        attn_scores_2=attn_scores_2,
        attn_weights_2=attn_weights_2,
        context_vec_2=attn_weights_2 @ values,  # (T,) @ (T, d_out) -> (d_out,)
        sa_v1=sa_v1,
        sa_v1_out=sa_v1(inputs),
        sa_v2=sa_v2,
        sa_v2_out=sa_v2(inputs),
        v1_from_v2_out=v1_from_v2(inputs),
    )


def causal_masks(sa_v2, inputs=None) -> dict:
    """Section 3.5.1: hide the future, by zero-then-renormalise and by -inf before softmax."""
    inputs = chapter_inputs() if inputs is None else inputs  # (T, d_in)
    queries, keys = sa_v2.W_query(inputs), sa_v2.W_key(inputs)  # (T, d_out)
    attn_scores = queries @ keys.T  # (T, d_out) @ (d_out, T) -> (T, T)
    scale = np.sqrt(keys.shape[-1], dtype=keys.dtype)
    attn_weights = F.softmax(attn_scores / scale)
    context_length = attn_scores.shape[0]
    mask = F.causal_mask(context_length)  # (T, T), True = attend (the chapter's tril)
    # method 1: zero the future (the chapter's mask_simple), then renormalise each row
    masked_simple = attn_weights * mask
    masked_simple_norm, _ = F.mask_renormalize_forward(attn_weights, mask)
    # method 2: -inf above the diagonal, then softmax
    masked, _ = F.mask_scores_forward(attn_scores, mask)
    attn_weights_causal = F.softmax(masked / scale)
    return dict(
        attn_weights=attn_weights,
        mask=mask,
        masked_simple=masked_simple,
        row_sums=masked_simple.sum(axis=-1),
        masked_simple_norm=masked_simple_norm,
        masked=masked,
        attn_weights_causal=attn_weights_causal,
        methods_max_diff=float(np.abs(masked_simple_norm - attn_weights_causal).max()),
    )


def dropout(attn_weights, weights: str = "auto") -> dict:
    """Section 3.5.2: dropout with p = 0.5 on a matrix of ones, then on the causal weights."""
    keep, source = chapter_dropout_keep(attn_weights.shape, DROPOUT_P, weights=weights)
    example = np.ones(attn_weights.shape, dtype=attn_weights.dtype)
    dropped_example, _ = F.dropout_forward(example, DROPOUT_P, keep=keep)
    dropped_weights, _ = F.dropout_forward(attn_weights, DROPOUT_P, keep=keep)
    return dict(source=source, keep=keep, example=dropped_example, attn_weights=dropped_weights)


def causal_attention(batch=None, weights: str = "auto") -> dict:
    """Section 3.5.3: the CausalAttention class on the chapter's batch of two copies."""
    batch = chapter_batch() if batch is None else batch  # (B, T, d_in)
    context_length = batch.shape[1]
    ca, source = chapter_module(
        CausalAttention, batch.shape[-1], D_OUT, context_length, 0.0, weights=weights
    )
    context_vecs = ca(batch)  # (B, T, d_out)
    return dict(source=source, ca=ca, context_vecs=context_vecs, attn_weights=ca.attn_weights)


def multihead(batch=None, weights: str = "auto") -> dict:
    """Section 3.6: MultiHeadAttentionWrapper (d_out per head) and MultiHeadAttention."""
    batch = chapter_batch() if batch is None else batch  # (B, T, d_in)
    d_in, context_length = batch.shape[-1], batch.shape[1]
    wrapper, source = chapter_module(
        MultiHeadAttentionWrapper, d_in, D_OUT, context_length, 0.0, NUM_HEADS, weights=weights
    )
    mha, _ = chapter_module(
        MultiHeadAttention, d_in, D_OUT, context_length, 0.0, NUM_HEADS, weights=weights
    )
    wrapper_out = wrapper(batch)  # (B, T, H * d_out)
    context_vecs = mha(batch)  # (B, T, d_out)
    return dict(
        source=source,
        wrapper=wrapper,
        wrapper_out=wrapper_out,
        mha=mha,
        context_vecs=context_vecs,
        attn_weights=mha.attn_weights,  # (B, H, T, T)
    )


def gpt2_parameter_count() -> int:
    """Exercise 3.3: MultiHeadAttention(768, 768, 1024, 0.0, 12), GPT-2 small's size."""
    mha = MultiHeadAttention(768, 768, 1024, 0.0, 12, rng=0)
    return sum(p.size for p in mha.parameters().values())  # buffers are not parameters


class Walkthrough(NamedTuple):
    """Every section's numbers, keyed by the chapter's variable names."""

    inputs: np.ndarray  # (T=6, d_in=3)
    batch: np.ndarray  # (B=2, T=6, d_in=3)
    simple: dict  # 3.3, simple_attention
    trainable: dict  # 3.4, trainable_weights
    causal: dict  # 3.5.1, causal_masks
    dropout: dict  # 3.5.2, dropout
    causal_attention: dict  # 3.5.3, causal_attention
    multihead: dict  # 3.6, multihead
    gpt2_parameters: int  # exercise 3.3


def walk(weights: str = "auto") -> Walkthrough:
    """The whole chapter, section after section, on its own inputs and seeds."""
    inputs, batch = chapter_inputs(), chapter_batch()
    trainable = trainable_weights(inputs, weights)
    causal = causal_masks(trainable["sa_v2"], inputs)
    return Walkthrough(
        inputs=inputs,
        batch=batch,
        simple=simple_attention(inputs),
        trainable=trainable,
        causal=causal,
        dropout=dropout(causal["attn_weights_causal"], weights),
        causal_attention=causal_attention(batch, weights),
        multihead=multihead(batch, weights),
        gpt2_parameters=gpt2_parameter_count(),
    )
