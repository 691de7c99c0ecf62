"""Tiled (FlashAttention-style) attention: an online-softmax forward and a recomputing backward.

The semantics are sdpa_forward's (torch's SDPA), but the (..., L, S) attention matrix is never
formed: only (Br, Bc) tiles of one head at a time, so memory grows linearly with L and S.
The derivation, step by step, is docs/backward/tiled.md.

Shape legend: L query tokens, S key tokens, E head dim of q and k, Ev head dim of v, leading
batch dims (...), e.g. (B, H); Br x Bc is the tile, query block i = rows r, key block j = cols c.

Forward, per head, for each query block i, scanning key/value blocks j (m, l, acc start at
-inf, 0, 0):
    1. s     = (q_i * scale) @ k_j^T                                (Br, Bc)
    1b. s    = softcap * tanh(s / softcap), when softcap is given
    2. s     = masked: causal / window / boolean -> -inf, float mask added
    3. m_new = max(m, rowmax(s)); p = exp(s - m_new); alpha = exp(m - m_new)
       l     = alpha * l + rowsum(p)                                (Br, 1)
    4. p     = p * keep / (1 - dropout_p), keep regenerated from (key, head, i, j)
    5. acc   = alpha * acc + p @ v_j                                (Br, Ev)
    6b. after the last key block, when sinks are given: the sink is one more column of the
       row, m_new = max(m, sink); acc, l rescaled by exp(m - m_new); l += exp(sink - m_new)
    6. out_i = acc / l, lse_i = m + log(l)                          (Br, Ev), (Br, 1)
The backward recomputes P = exp(s - lse) per tile and walks steps 6 -> 1; the sink's own
gradient is -sum over rows of p_sink * D, with p_sink = exp(sink - lse).

These functions check their arguments and build the arrays; the loops, and how they are
arranged for speed (pieces of work on threads, columns that fold a pass into a product), are
in npattn/fast/tiled_kernels.py.

Dropout is supported: each tile's keep-mask is drawn from a counter-based generator (Philox)
keyed by (key, head, i, j), so the backward regenerates it exactly and nothing (L, S) is
stored. The mask depends on the block sizes; flash_dropout_mask(cache) assembles it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _grad, _guard
from .._checks import (
    as_grad,
    check_attn_mask,
    check_positive_int,
    check_probability,
    check_scale,
    check_sdpa_inputs,
    make_rng,
)
from ..ops.heads import repeat_kv, repeat_kv_backward
from ..ops.sdpa import sum_to_shape
from ..ops.sinks import check_sinks
from ..ops.softcap import check_softcap
from .tiled_kernels import backward_tiles, forward_tiles

# Default tile (Br, Bc) of one head: 256 x 256 float32 is 256 KiB, so a worker's tile, its
# dS and the q, k, v blocks stay in a 1 MiB L2 cache; larger tiles waste more work on the
# diagonal and at the window's edge.
DEFAULT_BLOCKS = (256, 256)


class FlashCache(NamedTuple):
    # the shapes the backward sums its gradients back to: q (..., L, E), k (..., S, E) after
    # GQA repetition, v (..., S, Ev); their values live in `folded`, so no copy of q, k, v
    shapes: tuple
    out: np.ndarray  # (..., L, Ev), batch dims broadcast
    lse: np.ndarray  # (..., L, 1), log-sum-exp of each score row; 0 on fully masked rows
    attn_mask: np.ndarray | None  # a private copy of the mask, broadcastable to (..., L, S)
    is_causal: bool
    scale: float
    gqa_groups: int  # Hq // Hkv; 1 without GQA
    blocks: tuple  # (Br, Bc)
    dropout: tuple  # (dropout_p, key): tile keep-masks are regenerated from key; key None if p = 0
    window: int | None  # the causal sliding window, or None
    folded: tuple  # qx (..., L, E + 1) = [q * scale | -lse], kx = [k | 1], vx = [v | 1]
    softcap: float | None = None  # step 1b's cap, or None
    # (sink broadcastable to (..., L, 1) in q's dtype, the sinks' shape as given), or None
    sinks: tuple | None = None


def _block_sizes(block_size) -> tuple:
    """(Br, Bc): the caller's int or pair, or the default tile."""
    if block_size is None:
        return DEFAULT_BLOCKS
    pair = tuple(block_size) if isinstance(block_size, (tuple, list)) else (block_size,) * 2
    if len(pair) != 2:
        raise ValueError(f"block_size must be an int or a pair (Br, Bc), got {block_size!r}")
    return tuple(check_positive_int(b, "block_size") for b in pair)


def _tile_keep(key: int, head: int, i: int, j: int, shape: tuple, p: float) -> np.ndarray:
    """Step 4's boolean keep-mask of tile (i, j) of head `head` (flat index), shape (rows, cols):
    a Philox stream keyed by (key, head, tile), so no generator state passes between tiles and
    the backward redraws it."""
    tile_key = np.array([key, (head << 40) | (i << 20) | j], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=tile_key)).random(shape) >= p


def _keep_of(key, p: float, batch: tuple, dtype):
    """keep_of(h, i, j, shape): tile (i, j) of head h's keep-mask / (1 - p), or None (p = 0)."""
    if key is None:
        return lambda h, i, j, shape: None
    scale = dtype.type(1.0 / (1.0 - p) if p < 1.0 else 0.0)  # p = 1 drops every weight

    def keep_of(h, i, j, shape):
        head = int(np.ravel_multi_index(h, batch)) if batch else 0
        return _tile_keep(key, head, i, j, shape, p) * scale  # (rows, cols), 0 or 1 / (1 - p)

    return keep_of


def flash_attention_forward(
    q,
    k,
    v,
    attn_mask=None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    block_size: int | tuple | None = None,
    dropout_p: float = 0.0,
    rng=None,
    window: int | None = None,
    softcap: float | None = None,
    sinks=None,
):
    """sdpa_forward's semantics, tiled: returns (out, cache) and stores no (L, S) matrix.

    Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev); attn_mask broadcastable to
    (..., L, S), boolean (True = attend) or float (added) -> out (..., L, Ev). A fully masked
    row gives 0. block_size: an int, (Br, Bc), or None for DEFAULT_BLOCKS.
    Dropout (applied whenever dropout_p > 0) draws one key from rng, a Generator or a seed.
    window: a causal sliding window, query i sees key j when 0 <= i - j < window (it implies
    is_causal; tiles wholly outside it are skipped, so the cost grows as L * window).
    softcap c > 0 caps the scores to c * tanh(scores / c) before the mask; sinks (H,) (heads on
    axis -3) or broadcastable to (..., L, 1) join each row's softmax denominator, and
    flash_attention_backward then also returns dsinks; both as in sdpa_forward.
    """
    given = (q, k, v, attn_mask)
    q, k, v, groups = check_sdpa_inputs(q, k, v, enable_gqa)
    softcap = check_softcap(softcap)
    dropout_p = check_probability(dropout_p, "dropout_p")
    window = None if window is None else check_positive_int(window, "window")
    k, v = repeat_kv(k, groups), repeat_kv(v, groups)  # (..., Hkv, S, E) -> (..., Hq, S, E)
    (L, E), S, Ev, dtype = q.shape[-2:], k.shape[-2], v.shape[-1], q.dtype
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    attn_mask = check_attn_mask(attn_mask, is_causal, batch + (L, S))
    sink = None
    if sinks is not None:  # sdpa_forward's check, against the scores' shape
        scores_shape = np.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (L, S)
        sinks_shape = np.shape(sinks)
        sink = check_sinks(sinks, scores_shape, "query @ key^T").astype(dtype, copy=False)
    causal = is_causal or window is not None
    scale = check_scale(scale, E)
    Br, Bc = _block_sizes(block_size)
    key = int(make_rng(rng).integers(2**64, dtype=np.uint64)) if dropout_p > 0 else None
    # the folded columns (npattn/fast/tiled_kernels.py): qx = [q * scale | -lse] (the last
    # column is written once lse is known), kx = [k | 1], vx = [v | 1]
    qx = np.empty(batch + (L, E + 1), dtype)  # (..., L, E + 1)
    qx[..., :E] = q * dtype.type(scale)  # step 1's scale applied once, not to every tile
    kx = np.ones(batch + (S, E + 1), dtype)  # (..., S, E + 1)
    kx[..., :E] = k
    vx = np.ones(batch + (S, Ev + 1), dtype)  # (..., S, Ev + 1)
    vx[..., :Ev] = v
    mask = None if attn_mask is None else np.broadcast_to(attn_mask, batch + (L, S))  # a view
    out = np.empty(batch + (L, Ev), dtype)  # (..., L, Ev)
    lse = np.empty(batch + (L, 1), dtype)  # (..., L, 1)
    keep_of = _keep_of(key, dropout_p, batch, dtype)
    sink_rows = None if sink is None else np.broadcast_to(sink, batch + (L, 1))  # a view
    forward_tiles(
        qx, kx, vx, mask, causal, window, (Br, Bc), keep_of, out, lse,
        softcap=softcap, sink=sink_rows,
    )  # fmt: skip
    qx[..., E:] = -lse
    blocks, dropout, folded = (Br, Bc), (dropout_p, key), (qx, kx, vx)
    # the cache keeps private, read-only arrays (npattn/_guard.py): copies of what the caller
    # holds, out included, since the caller may change the returned array
    # q, k and v themselves are not kept: the folded columns are private copies of them
    attn_mask = _guard.private(attn_mask, *given)
    out_kept, lse = _guard.private(out, out), _guard.readonly(lse)
    qx, kx, vx = (_guard.readonly(a) for a in folded)
    if not _grad.is_grad_enabled():  # no backward can follow: out is the caller's, uncopied
        qx = kx = vx = None
    shapes = (q.shape, k.shape, v.shape)
    sinks = None if sink is None else (_guard.private(sink, *given, sinks), sinks_shape)
    cache = FlashCache(
        shapes, out_kept, lse, attn_mask, is_causal, scale, groups, blocks, dropout, window,
        (qx, kx, vx), softcap, sinks,
    )  # fmt: skip
    return out, cache


def flash_attention_backward(dout, cache: FlashCache):
    """Gradients of flash_attention_forward w.r.t. q, k and v, tile by tile, steps 6 -> 1.

    Shapes: dout (..., L, Ev) -> dq (..., L, E), dk (..., S, E), dv (..., S, Ev), in the shapes
    q, k and v were given (GQA heads and broadcast batch dims summed back).
    Returns (dq, dk, dv), or (dq, dk, dv, dsinks) when the forward was given sinks (dsinks in
    the sinks' shape), as sdpa_backward does.
    """
    if cache is None or cache.folded[0] is None:
        _grad.require(None, "flash_attention_backward")
    shapes, out, lse, attn_mask, is_causal, scale, groups, blocks, dropout, window = cache[:10]
    folded, softcap, sinks = cache.folded, cache.softcap, cache.sinks
    (q_shape, k_shape, v_shape), (qx, kx, vx) = shapes, folded
    dout = as_grad(dout, out.shape, out.dtype)
    (L, E), S, Ev, dtype = q_shape[-2:], k_shape[-2], v_shape[-1], out.dtype
    batch = out.shape[:-2]
    # 6. out = P @ v with rows of P summing to 1 gives, for the softmax backward,
    #    sum_j P_ij dP_ij = rowsum(dout * out) =: D; it replaces the (L, S) row sums
    D = np.einsum("...le,...le->...l", dout, out)  # (..., L), no (..., L, Ev) temporary
    # every tile adds to its q block's and its k/v block's gradients
    dq = np.zeros(batch + (L, E), dtype)
    dk = np.zeros(batch + (S, E), dtype)
    dv = np.zeros(batch + (S, Ev), dtype)
    mask = None if attn_mask is None else np.broadcast_to(attn_mask, batch + (L, S))
    keep_of = _keep_of(dropout[1], dropout[0], batch, dtype)
    causal = is_causal or window is not None
    dsinks = None
    if sinks is not None:
        # 6b. the sink is one more column of each row's softmax, with weight
        #     p_sink = exp(sink - lse) and no value: its dP is 0, so its dS is
        #     p_sink * (0 - D), summed over the rows it was broadcast to
        sink, sinks_shape = sinks
        dsink = -np.exp(sink - lse) * D[..., None]  # (..., L, 1)
        if len(sinks_shape) == 1:  # (H,): heads on axis -3
            dsinks = dsink.sum(axis=tuple(i for i in range(dsink.ndim) if i != dsink.ndim - 3))
        else:
            dsinks = sum_to_shape(dsink, sinks_shape)
        dsinks = dsinks.reshape(sinks_shape)
    backward_tiles(
        qx, kx, vx, dout, D, mask, causal, window, blocks, keep_of, dq, dk, dv, softcap=softcap
    )
    dq *= dtype.type(scale)  # dk took q * scale from qx, dq gets its scale once, here
    # undo broadcasting of batch dims, then sum the GQA groups: (..., Hq, S, E) -> (..., Hkv, S, E)
    dq = sum_to_shape(dq, q_shape)
    dk = repeat_kv_backward(sum_to_shape(dk, k_shape), groups)
    dv = repeat_kv_backward(sum_to_shape(dv, v_shape), groups)
    return (dq, dk, dv) if dsinks is None else (dq, dk, dv, dsinks)


def flash_dropout_mask(cache: FlashCache) -> np.ndarray:
    """The keep-mask a dropout forward used, assembled to full size (for tests: O(L S) memory).

    Shapes: -> keep (..., L, S), boolean, True = kept; all True when dropout_p was 0.
    """
    L, S = cache.shapes[0][-2], cache.shapes[1][-2]  # q (..., L, E), k (..., S, E)
    (Br, Bc), (p, key) = cache.blocks, cache.dropout
    batch = cache.out.shape[:-2]
    keep = np.ones(batch + (L, S), dtype=bool)
    if key is None:
        return keep
    for head, h in enumerate(np.ndindex(*batch)):
        for i, r0 in enumerate(range(0, L, Br)):
            for j, c0 in enumerate(range(0, S, Bc)):
                tile = keep[h][r0 : r0 + Br, c0 : c0 + Bc]  # (rows, cols), a view
                tile[...] = _tile_keep(key, head, i, j, tile.shape, p)
    return keep
