"""Tiled (FlashAttention-style) attention: an online-softmax forward and a recomputing backward.

The semantics are sdpa_forward's (torch's SDPA), but the (..., L, S) attention matrix is never
formed: only (..., Br, Bc) tiles of it, one at a time, so memory grows linearly with L and S.
The derivation, step by step, is docs/backward/tiled.md.

Shape legend: L query tokens, S key tokens, E head dim of q and k, Ev head dim of v, leading
batch dims (...), e.g. (B, H); Br x Bc is the tile, query block i = rows r, key block j = cols c.

Forward, for each query block i, scanning key/value blocks j (m, l, acc start at -inf, 0, 0):
    1. s     = (q_i * scale) @ k_j^T                                (..., Br, Bc)
    2. s     = masked: causal / boolean -> -inf, float mask added
    3. m_new = max(m, rowmax(s)); p = exp(s - m_new); alpha = exp(m - m_new)
       l     = alpha * l + rowsum(p)                                (..., Br, 1)
    4. p     = p * keep / (1 - dropout_p), keep regenerated from (key, i, j)
    5. acc   = alpha * acc + p @ v_j                                (..., Br, Ev)
    6. after the last key block: out_i = acc / l, lse_i = m + log(l)
The backward recomputes P = exp(s - lse) per tile and walks steps 6 -> 1.

Dropout is supported: each tile's keep-mask is drawn from a counter-based generator (Philox)
keyed by (key, i, j), so the backward regenerates it exactly and nothing (L, S) is stored.
The mask therefore depends on the block sizes; flash_dropout_mask(cache) assembles it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import _guard
from .._checks import (
    as_grad,
    check_attn_mask,
    check_positive_int,
    check_probability,
    check_scale,
    check_sdpa_inputs,
    make_rng,
)
from ..ops.dropout import dropout_backward, dropout_forward
from ..ops.heads import repeat_kv, repeat_kv_backward
from ..ops.sdpa import apply_attn_mask, sum_to_shape

# Default tile: the largest power-of-two block with batch * Br * Bc <= TILE_ELEMENTS (1 MiB in
# float32, about an L2 cache), between MIN_BLOCK and MAX_BLOCK. Measured on 2 cores, E = 64:
# B*H = 1 is fastest at 256-512, B*H = 16 at 128; larger tiles waste work on the diagonal.
TILE_ELEMENTS = 2**18
MAX_BLOCK = 512
MIN_BLOCK = 16


class FlashCache(NamedTuple):
    q: np.ndarray  # (..., L, E)
    k: np.ndarray  # (..., S, E), after GQA repetition (a copy only when groups > 1)
    v: np.ndarray  # (..., S, Ev), after GQA repetition
    out: np.ndarray  # (..., L, Ev), batch dims broadcast
    lse: np.ndarray  # (..., L, 1), log-sum-exp of each score row; 0 on fully masked rows
    attn_mask: np.ndarray | None  # a private copy of the mask, broadcastable to (..., L, S)
    is_causal: bool
    scale: float
    gqa_groups: int  # Hq // Hkv; 1 without GQA
    blocks: tuple  # (Br, Bc)
    dropout: tuple  # (dropout_p, key): tile keep-masks are regenerated from key; key None if p = 0


def _block_sizes(block_size, batch: tuple) -> tuple:
    """(Br, Bc): the caller's int or pair, or the largest power of two whose tile fits."""
    if block_size is None:
        b = MAX_BLOCK
        while b > MIN_BLOCK and math.prod(batch) * b * b > TILE_ELEMENTS:
            b //= 2
        return b, b
    pair = tuple(block_size) if isinstance(block_size, (tuple, list)) else (block_size,) * 2
    if len(pair) != 2:
        raise ValueError(f"block_size must be an int or a pair (Br, Bc), got {block_size!r}")
    return tuple(check_positive_int(b, "block_size") for b in pair)


def _tile_keep(key: int, i: int, j: int, shape: tuple, p: float) -> np.ndarray:
    """Step 4's boolean keep-mask of tile (i, j), shape (..., Br, Bc): a Philox stream keyed by
    (key, tile), so no generator state passes between tiles and the backward redraws it."""
    tile_key = np.array([key, (i << 32) | j], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=tile_key)).random(shape) >= p


def _scores(q_scaled, k, attn_mask, is_causal, r: slice, c: slice) -> np.ndarray:
    """Steps 1-2 for one tile, shared by forward and backward (the backward recomputes them).

    Shapes: q_scaled (..., L, E), k (..., S, E) -> s (..., Br, Bc), a fresh array.
    """
    # 1. s = (q_i * scale) @ k_j^T                  (..., Br, E) @ (..., E, Bc) -> (..., Br, Bc)
    s = q_scaled[..., r, :] @ np.swapaxes(k[..., c, :], -1, -2)
    # 2. masking, sliced to the tile
    if is_causal:
        if c.stop - 1 <= r.start:  # wholly on or below the diagonal: nothing masked
            return s
        # query r.start + a sees key c.start + b when b <= a + r.start - c.start
        tile = np.tri(s.shape[-2], s.shape[-1], k=r.start - c.start, dtype=bool)  # (Br, Bc)
        return apply_attn_mask(s, tile)
    if attn_mask is None:
        return s
    rows = r if attn_mask.shape[-2] != 1 else slice(None)  # a broadcast axis stays whole
    cols = c if attn_mask.shape[-1] != 1 else slice(None)
    return apply_attn_mask(s, attn_mask[..., rows, cols])


def _key_blocks(is_causal: bool, r: slice, S: int, Bc: int):
    """(j, c) for each key block of query block r; causal skips those wholly above the diagonal."""
    stop = min(S, r.stop) if is_causal else S  # key c.start > every query in r: all masked
    return ((j, slice(c0, min(c0 + Bc, S))) for j, c0 in enumerate(range(0, stop, Bc)))


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
):
    """sdpa_forward's semantics, tiled: returns (out, cache) and stores no (L, S) matrix.

    Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev); attn_mask broadcastable to
    (..., L, S), boolean (True = attend) or float (added) -> out (..., L, Ev). A fully masked
    row gives 0. block_size: an int, (Br, Bc), or None for a size from TILE_ELEMENTS.
    Dropout (applied whenever dropout_p > 0) draws one key from rng, a Generator or a seed.
    """
    given = (q, k, v, attn_mask)
    q, k, v, groups = check_sdpa_inputs(q, k, v, enable_gqa)
    dropout_p = check_probability(dropout_p, "dropout_p")
    k, v = repeat_kv(k, groups), repeat_kv(v, groups)  # (..., Hkv, S, E) -> (..., Hq, S, E)
    (L, E), S, Ev, dtype = q.shape[-2:], k.shape[-2], v.shape[-1], q.dtype
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    attn_mask = check_attn_mask(attn_mask, is_causal, batch + (L, S))
    if attn_mask is not None and attn_mask.ndim < 2:  # (S,) or () -> (1, S) or (1, 1), a view
        attn_mask = attn_mask.reshape((1,) * (2 - attn_mask.ndim) + attn_mask.shape)
    scale = check_scale(scale, E)
    Br, Bc = _block_sizes(block_size, batch)
    key = int(make_rng(rng).integers(2**64, dtype=np.uint64)) if dropout_p > 0 else None
    # step 1's scale applied once to q, (..., L, E), rather than to every (..., Br, Bc) tile
    q_scaled = q * dtype.type(scale)
    out = np.empty(batch + (L, Ev), dtype)  # (..., L, Ev)
    lse = np.empty(batch + (L, 1), dtype)  # (..., L, 1)
    for i, r0 in enumerate(range(0, L, Br)):
        r = slice(r0, min(r0 + Br, L))
        m = np.full(batch + (r.stop - r0, 1), -np.inf, dtype)  # running row max  (..., Br, 1)
        l = np.zeros(batch + (r.stop - r0, 1), dtype)  # running row sum of exp  (..., Br, 1)
        acc = np.zeros(batch + (r.stop - r0, Ev), dtype)  # running out * l  (..., Br, Ev)
        for j, c in _key_blocks(is_causal, r, S, Bc):
            # 1-2. s = masked ((q_i * scale) @ k_j^T)                     (..., Br, Bc)
            s = _scores(q_scaled, k, attn_mask, is_causal, r, c)
            # 3. online softmax: rescale what came before by alpha = exp(m - m_new)
            m_new = np.maximum(m, s.max(axis=-1, keepdims=True))  # (..., Br, 1)
            m_shift = np.where(np.isneginf(m_new), 0, m_new)  # all -inf so far: shift by 0
            s -= m_shift
            p = np.exp(s, out=s)  # (..., Br, Bc), 0 where masked
            alpha = np.exp(m - m_shift)  # (..., Br, 1); 0 while m was -inf
            l *= alpha
            l += p.sum(axis=-1, keepdims=True)
            m = m_new
            # 4. dropout on the (unnormalised) weights; l keeps the undropped sum
            if key is not None:
                keep = _tile_keep(key, i, j, p.shape, dropout_p)  # (..., Br, Bc)
                p, _ = dropout_forward(p, dropout_p, keep=keep)
            # 5. acc = alpha * acc + p @ v_j       (..., Br, Bc) @ (..., Bc, Ev) -> (..., Br, Ev)
            acc *= alpha
            acc += p @ v[..., c, :]
        # 6. normalise; a fully masked row has l = 0, acc = 0: out 0 and lse 0 (finite)
        l_safe = np.where(l == 0, 1, l)  # (..., Br, 1)
        out[..., r, :] = acc / l_safe
        lse[..., r, :] = np.where(np.isneginf(m), 0, m) + np.log(l_safe)
    blocks, dropout = (Br, Bc), (dropout_p, key)
    # the cache keeps private, read-only arrays (npattn/_guard.py): copies of what the caller
    # holds, out included, since the caller may change the returned array
    q, k, v, attn_mask = (_guard.private(a, *given) for a in (q, k, v, attn_mask))
    out_kept, lse = _guard.private(out, out), _guard.readonly(lse)
    cache = FlashCache(q, k, v, out_kept, lse, attn_mask, is_causal, scale, groups, blocks, dropout)
    return out, cache


def flash_attention_backward(dout, cache: FlashCache):
    """Gradients of flash_attention_forward w.r.t. q, k and v, tile by tile, steps 6 -> 1.

    Shapes: dout (..., L, Ev) -> dq (..., L, E), dk (..., S, E), dv (..., S, Ev), in the shapes
    q, k and v were given (GQA heads and broadcast batch dims summed back).
    """
    q, k, v, out, lse, attn_mask, is_causal, scale, groups, (Br, Bc), (p_drop, key) = cache
    dout = as_grad(dout, out.shape, q.dtype)
    (L, E), S, dtype = q.shape[-2:], k.shape[-2], q.dtype
    batch = out.shape[:-2]
    q_scaled = q * dtype.type(scale)  # as in the forward, (..., L, E)
    # 6. out = P @ v with rows of P summing to 1 gives, for the softmax backward,
    #    sum_j P_ij dP_ij = rowsum(dout * out) =: D; it replaces the (L, S) row sums
    D = np.sum(dout * out, axis=-1, keepdims=True)  # (..., L, 1)
    # every tile adds to its q block's and its k/v block's gradients, hence the +=
    dq = np.zeros(batch + (L, E), dtype)
    dk = np.zeros(batch + (S, E), dtype)
    dv = np.zeros(batch + (S, v.shape[-1]), dtype)
    for i, r0 in enumerate(range(0, L, Br)):
        r = slice(r0, min(r0 + Br, L))
        dout_i = dout[..., r, :]  # (..., Br, Ev)
        for j, c in _key_blocks(is_causal, r, S, Bc):
            # 1-2. recomputed rather than stored: this is what keeps memory linear
            s = _scores(q_scaled, k, attn_mask, is_causal, r, c)  # (..., Br, Bc)
            # 3. P = exp(s - lse), the softmax weights of the tile (0 where masked)
            s -= lse[..., r, :]
            P = np.exp(s, out=s)  # (..., Br, Bc)
            # 4. dropped = P * keep / (1 - p), the same keep-mask, redrawn from (key, i, j)
            keep = None if key is None else _tile_keep(key, i, j, P.shape, p_drop)  # (.., Br, Bc)
            dropped, drop_cache = dropout_forward(P, p_drop if key is not None else 0.0, keep=keep)
            # 5. out_i = sum_j dropped_ij @ v_j
            dv[..., c, :] += np.swapaxes(dropped, -1, -2) @ dout_i  # (..., Bc, Br) @ (.., Br, Ev)
            ddropped = dout_i @ np.swapaxes(v[..., c, :], -1, -2)  # (..., Br, Ev) @ (.., Ev, Bc)
            # 4. dP = ddropped * keep / (1 - p)
            dP = dropout_backward(ddropped, drop_cache)
            # 3. softmax backward with D: dS = P * (dP - D); masked entries have P = 0
            dP -= D[..., r, :]
            dS = np.multiply(dP, P, out=dP)  # (..., Br, Bc)
            # 2. masking: -inf entries already have dS = 0; a float mask passes dS through
            # 1. s = (q * scale) @ k^T: dq gets its scale once, after the loop
            dq[..., r, :] += dS @ k[..., c, :]  # (..., Br, Bc) @ (..., Bc, E) -> (..., Br, E)
            dk[..., c, :] += np.swapaxes(dS, -1, -2) @ q_scaled[..., r, :]  # -> (..., Bc, E)
    dq *= dtype.type(scale)
    # undo broadcasting of batch dims, then sum the GQA groups: (..., Hq, S, E) -> (..., Hkv, S, E)
    dq = sum_to_shape(dq, q.shape)
    dk = repeat_kv_backward(sum_to_shape(dk, k.shape), groups)
    dv = repeat_kv_backward(sum_to_shape(dv, v.shape), groups)
    return dq, dk, dv


def flash_dropout_mask(cache: FlashCache) -> np.ndarray:
    """The keep-mask a dropout forward used, assembled to full size (for tests: O(L S) memory).

    Shapes: -> keep (..., L, S), boolean, True = kept; all True when dropout_p was 0.
    """
    (L, S), (Br, Bc), (p, key) = (cache.q.shape[-2], cache.k.shape[-2]), cache.blocks, cache.dropout
    keep = np.ones(cache.out.shape[:-2] + (L, S), dtype=bool)
    if key is None:
        return keep
    for i, r0 in enumerate(range(0, L, Br)):
        for j, c0 in enumerate(range(0, S, Bc)):
            tile = keep[..., r0 : r0 + Br, c0 : c0 + Bc]  # (..., Br, Bc), a view
            tile[...] = _tile_keep(key, i, j, tile.shape, p)
    return keep
