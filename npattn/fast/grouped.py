"""Forward-only attention with each key/value head read once by its group of query heads.

Cached decoding runs no backward, so it needs neither the repeated keys and values that
sdpa_forward(enable_gqa=True) forms nor a cache: a group's H / G query heads are stacked as
rows against their one key/value head. The numbers are sdpa_forward's (tests/test_attention.py).

Shape legend: B batch, H query heads, G key/value heads (G divides H), n = H / G, T queries,
S keys, E head dim of q and k, Ev head dim of v.

Forward:
    1. attn_scores = (q * scale) @ k^T, a group's query heads stacked    (B, G, n * T, S)
    1b. attn_scores = softcap * tanh(attn_scores / softcap)  (softcap)
    2. masked: -inf where the mask is False
    3. attn_weights = softmax(attn_scores), each head's sink in the denominator (sinks)
    4. dropout on the weights (training only)
    5. context = dropped @ v                                             (B, H, T, Ev)
"""

from __future__ import annotations

import numpy as np

from ..ops.dropout import dropout_forward, dropout_keep_mask
from ..ops.sinks import softmax_with_sink_forward
from ..ops.softcap import softcap_forward
from ..ops.softmax import softmax_inplace
from ..ops.weighted import weighted_sum


def grouped_attention(
    queries, keys, values, mask=None, *, scale: float | None = None, softcap=None, sinks=None,
    dropout_p: float = 0.0, rng=None,
):  # fmt: skip
    """sdpa_forward(..., enable_gqa=True)'s numbers, forward only, no repeated keys or values.

    Shapes: queries (B, H, T, E), keys (B, G, S, E), values (B, G, S, Ev), mask (T, S) or
    (B, 1, T, S) True = attend, or None when every key is attended; sinks (H,) or None
    -> context (B, H, T, Ev), attn_weights (B, H, T, S) before dropout, keep-mask or None.
    scale defaults to 1 / sqrt(E). Query head h uses key/value head h // (H / G), as
    repeat_interleave orders them.
    """
    B, H, T, E = queries.shape
    G, S = keys.shape[1], keys.shape[2]
    n = H // G  # query heads per key/value head
    dtype = queries.dtype
    scale = 1.0 / np.sqrt(E) if scale is None else scale
    # 1. attn_scores = (q * scale) @ k^T, a group's query heads stacked as n * T rows
    q = queries.reshape(B, G, n * T, E) * dtype.type(scale)  # (B, H, T, E) -> (B, G, n*T, E)
    attn_scores = q @ keys.swapaxes(-1, -2)  # (B, G, n*T, E) @ (B, G, E, S) -> (B, G, n*T, S)
    # 1b. soft-capping, before the mask
    if softcap is not None:
        attn_scores, _ = softcap_forward(attn_scores, softcap)
    # 2. mask: -inf where a key is not attended
    if mask is not None:
        scores = attn_scores.reshape(B, G, n, T, S)  # a view: (B, G, n*T, S) -> (B, G, n, T, S)
        mask = mask if mask.ndim == 2 else mask[:, None]  # (B, 1, T, S) -> (B, 1, 1, T, S)
        np.copyto(scores, -np.inf, where=~mask)
    # 3. attn_weights = softmax(attn_scores), in place; sinks join the denominator
    if sinks is not None:
        sink = np.asarray(sinks, dtype=dtype).reshape(G, n, 1, 1)  # head h = g * n + i
        sink = np.broadcast_to(sink, (G, n, T, 1)).reshape(G, n * T, 1)  # (G, n * T, 1)
        attn_weights, _ = softmax_with_sink_forward(attn_scores, sink, copy=False)
    else:
        attn_weights = softmax_inplace(attn_scores, axis=-1)  # (B, G, n * T, S)
    # 4. dropout on the weights (training mode only); the keep-mask is drawn here, as
    #    dropout_forward would, since it is shown (m.dropout_mask) and no cache is kept
    keep = dropout_keep_mask(attn_weights.shape, dropout_p, rng) if dropout_p > 0.0 else None
    dropped, _ = dropout_forward(attn_weights, dropout_p, keep=keep)
    # 5. context = dropped @ v
    context = weighted_sum(dropped, values)  # (B, G, n*T, S) @ (B, G, S, Ev) -> (.., n*T, Ev)
    context = context.reshape(B, H, T, values.shape[-1])  # -> (B, H, T, Ev)
    attn_weights = attn_weights.reshape(B, H, T, S)
    keep = None if keep is None else keep.reshape(B, H, T, S)
    return context, attn_weights, keep
