"""Causal scaled dot-product attention that skips the blocks above the diagonal.

The same function as sdpa_forward(q, k, v, is_causal=True), for q, k and v with the same leading
dims (no broadcasting, no GQA): query i attends keys j <= i (top-left aligned, as torch's
is_causal), with dropout on the weights; the same dtype rule (numpy's promotion of q, k, v), the
same argument checks (npattn/_checks.py) and the same keep-mask drawn from `rng`.
Four things make it fast (docs/backward/causal.md, "How the loops are arranged"):
- one head at a time, so each head's (L, S) weights stay in the CPU cache while softmax and
  the backward's elementwise steps run over them;
- heads side by side, one per BLAS thread (fast/_parallel.py), rather than every small product
  split over the threads;
- row blocks of `block_size` queries: block [r0, r1) needs only the keys [0, r0 + block_size),
  so the matrix products skip the upper triangle (about half the work for long sequences);
- without dropout, a column appended to v and to dout folds a pass into a product:
  e @ [v | 1] = [e @ v | rowsum(e)] gives step 3's row sums, and
  [dout | -D] @ [v | 1]^T = dout @ v^T - D the softmax backward's subtraction.
The full (..., L, S) weights are still stored (zeros above the diagonal) for the backward
and for inspection. The steps are sdpa_forward's; the backward is sdpa_backward's, except that
the softmax backward's row sums come from FlashAttention's identity (see causal_sdpa_backward).

Shape legend: L query tokens, S key tokens, E head dim of q and k, Ev head dim of v, and the
leading dims (...) that q, k and v share, e.g. (B, H).

Forward, per head and per row block [r0, r1) with keys [0, c1), c1 = min(r0 + block, S):
    1. attn_scores  = (q[r0:r1] * scale) @ k[:c1]^T                (rows, c1)
    2. attn_scores  = -inf where key j > query i (the diagonal block only)
    3. attn_weights = softmax(attn_scores)                          (rows, c1)
    4. dropped      = attn_weights * keep / (1 - p)                 (rows, c1)
    5. out[r0:r1]   = dropped @ v[:c1]                              (rows, Ev)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _grad, _guard
from .._checks import as_grad, check_dropout_mask, check_probability, check_qkv, check_scale
from ..ops.dropout import dropout_keep_mask
from ._parallel import map_heads, map_pieces, worker_count

BLOCK_SIZE = 128  # rows per block: small enough to skip most of the triangle, large for BLAS


class CausalCache(NamedTuple):
    q: np.ndarray  # (..., L, E)
    k: np.ndarray  # (..., S, E)
    v: np.ndarray  # (..., S, Ev)
    out: np.ndarray  # (..., L, Ev), for D = rowsum(dout * out) in the backward
    attn_weights: np.ndarray  # (..., L, S), softmax output before dropout, 0 above the diagonal
    keep: np.ndarray | None  # (..., L, S) boolean keep-mask, or None without dropout
    dropout_scale: float  # 1 / (1 - p)
    scale: float
    block_size: int


def _blocks(n_rows: int, n_keys: int, block_size: int):
    """(r0, r1, c1) per row block: rows [r0, r1) see at most the keys [0, c1)."""
    for r0 in range(0, n_rows, block_size):
        yield r0, min(r0 + block_size, n_rows), min(r0 + block_size, n_keys)


def _check_inputs(q, k, v, block_size):
    q, k, v = check_qkv(q, k, v)  # as sdpa_forward: one dtype, numpy's promotion of the three
    lead = q.shape[:-2]
    if k.shape[:-2] != lead or v.shape[:-2] != lead:
        raise ValueError(
            f"key and value must have the leading dims {lead} of query {tuple(q.shape)} "
            f"(no broadcasting here), got key {tuple(k.shape)}, value {tuple(v.shape)}"
        )
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
        raise TypeError(f"block_size must be an int, got {type(block_size).__name__}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    return q, k, v, min(int(block_size), max(q.shape[-2], k.shape[-2]))  # no larger block


def causal_sdpa_forward(
    q,
    k,
    v,
    dropout_p: float = 0.0,
    scale: float | None = None,
    *,
    rng=None,
    dropout_mask=None,
    block_size: int = BLOCK_SIZE,
):
    """sdpa_forward(q, k, v, is_causal=True, ...) computed head by head on row blocks.

    Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev); dropout_mask boolean keep-mask
    broadcastable to (..., L, S) -> out (..., L, Ev). Returns (out, CausalCache).
    The keep-mask is drawn from `rng` exactly as sdpa_forward draws it.
    """
    given = (q, k, v, dropout_mask)
    q, k, v, block_size = _check_inputs(q, k, v, block_size)
    dtype = q.dtype
    *lead, L, _ = q.shape
    S = k.shape[-2]
    dropout_p = check_probability(dropout_p, "dropout_p")
    scale = check_scale(scale, q.shape[-1])
    keep = check_dropout_mask(dropout_mask, dropout_p, (*lead, L, S))
    if keep is None and dropout_p > 0.0:
        keep = dropout_keep_mask((*lead, L, S), dropout_p, rng)  # as sdpa_forward draws it
    keep = None if keep is None else np.broadcast_to(keep, (*lead, L, S))  # indexed per head
    Ev = v.shape[-1]
    dropout_scale = 1.0 / (1.0 - dropout_p) if dropout_p < 1.0 else 0.0  # p = 1 drops all
    above = ~np.tri(block_size, block_size, dtype=bool)  # key j > query i inside a block
    attn_weights = np.zeros((*lead, L, S), dtype=dtype)  # blocks above the diagonal stay 0
    out = np.empty((*lead, L, v.shape[-1]), dtype=dtype)

    def forward_head(h):  # one head's (L, S) weights fit the CPU cache
        # q is scaled before the product, as in sdpa_forward: no unscaled score forms, so
        # float16 overflows only where the scaled score would (docs/numerics.md)
        q_scaled = q[h] * dtype.type(scale)  # (L, E), in the worker: no pass on one thread
        vx = np.ones((S, Ev + 1), dtype=dtype)  # [v | 1]: e @ vx is [e @ v | rowsum(e)]
        vx[:, :Ev] = v[h]
        for r0, r1, c1 in _blocks(L, S, block_size):
            w = attn_weights[h][r0:r1, :c1]  # (rows, c1), a view: written in place
            # 1. attn_scores = (q * scale) @ k^T   (rows, E) @ (E, c1) -> (rows, c1)
            np.matmul(q_scaled[r0:r1], k[h][:c1].T, out=w)
            # 2. causal mask on the diagonal block: keys r0.. are hidden from earlier rows
            np.copyto(w[:, r0:], -np.inf, where=above[: r1 - r0, : max(c1 - r0, 0)])
            # 3. softmax in place, e = exp(attn_scores - rowmax); every row sees key 0, so
            #    the row max is finite and the row sum is >= 1
            w -= w.max(axis=-1, keepdims=True)
            e = np.exp(w, out=w)
            if keep is None:
                # 5. with 3's row sums: [e @ v | rowsum(e)] in one product   (rows, Ev + 1)
                ev = e @ vx[:c1]
                inv_sum = 1 / ev[:, Ev:]  # (rows, 1)
                e *= inv_sum  # 3. attn_weights = e / rowsum(e)
                np.multiply(ev[:, :Ev], inv_sum, out=out[h][r0:r1])  # out = attn_weights @ v
                continue
            e /= e.sum(axis=-1, keepdims=True)  # 3. attn_weights = e / rowsum(e)
            # 4. dropout (a new array: the weights before dropout are kept)
            dropped = e * keep[h][r0:r1, :c1] * dtype.type(dropout_scale)
            # 5. out = dropped @ v      (rows, c1) @ (c1, Ev) -> (rows, Ev)
            np.matmul(dropped, v[h][:c1], out=out[h][r0:r1])

    map_heads(forward_head, tuple(lead))  # heads side by side on BLAS's threads (fast/_parallel.py)
    # out is cached as a copy: the caller owns the returned array and may change it; the
    # cache keeps private, read-only q, k, v, weights and keep-mask (npattn/_guard.py)
    q, k, v, keep = (_guard.private(a, *given) for a in (q, k, v, keep))
    attn_weights = _guard.readonly(attn_weights)
    kept = (q, k, v, out.copy())
    if not _grad.is_grad_enabled():  # no backward can follow: only the weights and keep-mask
        kept = (None,) * 4
    cache = CausalCache(*kept, attn_weights, keep, dropout_scale, scale, block_size)
    return out, cache


def causal_sdpa_backward(dout, cache: CausalCache):
    """Gradients of causal_sdpa_forward w.r.t. q, k and v, steps 5 -> 1, head by head.

    Shapes: dout (..., L, Ev) -> dq (..., L, E), dk (..., S, E), dv (..., S, Ev).
    """
    if cache is None or cache.q is None:
        _grad.require(None, "causal_sdpa_backward")
    q, k, v, out, attn_weights, keep, dropout_scale, scale, block_size = cache
    dtype = q.dtype
    dout = as_grad(dout, out.shape, dtype)
    *lead, L, S = attn_weights.shape
    dq, dk, dv = np.empty_like(q), np.zeros_like(k), np.zeros_like(v)  # keys no query sees: 0
    Ev = v.shape[-1]
    scratch = {}  # worker -> its (L, S) dattn_scores, [v | 1] and [dout | -D], reused by heads

    def backward_head(worker, h):
        if worker not in scratch:
            scratch[worker] = (
                np.empty((L, S), dtype=dtype),
                np.ones((S, Ev + 1), dtype=dtype),
                np.empty((L, Ev + 1), dtype=dtype),
            )
        # the head's (L, S) gradient: only blocks on or below the diagonal are written, and
        # only those are read
        dattn_scores, vx, doutx = scratch[worker]
        # 3. the softmax backward needs D = rowsum(dattn_weights * attn_weights); it equals
        #    rowsum(dout * out), since out = dropped @ v (FlashAttention's identity)
        D = np.einsum("le,le->l", dout[h], out[h])[:, None]  # (L, 1)
        vx[:, :Ev] = v[h]  # [v | 1]                 (S, Ev + 1)
        doutx[:, :Ev] = dout[h]  # [dout | -D]       (L, Ev + 1)
        np.negative(D, out=doutx[:, Ev:])
        for r0, r1, c1 in _blocks(L, S, block_size):
            ds = dattn_scores[r0:r1, :c1]  # (rows, c1)
            if keep is None:
                # 5, 3. ddropped - D = [dout | -D] @ [v | 1]^T    (rows, Ev + 1) @ (Ev + 1, c1)
                np.matmul(doutx[r0:r1], vx[:c1].T, out=ds)
            else:
                # 5. out = dropped @ v: ddropped = dout @ v^T    (rows, Ev) @ (Ev, c1)
                np.matmul(dout[h][r0:r1], v[h][:c1].T, out=ds)
                # 4. dropped = attn_weights * keep / (1 - p)
                ds *= keep[h][r0:r1, :c1]
                ds *= dtype.type(dropout_scale)
                ds -= D[r0:r1]  # 3.'s dattn_weights - D
            # 3. attn_weights = softmax(attn_scores): dattn_scores = w * (dw - D)
            ds *= attn_weights[h][r0:r1, :c1]
            # 2. masked entries have weight 0, so their gradient is already 0
            # 1. attn_scores = (q * scale) @ k^T: dq = dattn_scores @ k * scale  (rows, E)
            np.matmul(ds, k[h][:c1], out=dq[h][r0:r1])
        # 1. and 5., by key block [c0, c1): only queries i >= c0 saw these keys
        for c0, c1, _ in _blocks(min(L, S), S, block_size):
            ds = dattn_scores[c0:, c0:c1]  # (L - c0, keys)
            np.matmul(ds.T, q[h][c0:], out=dk[h][c0:c1])  # (keys, L - c0) @ (L - c0, E)
            dropped = attn_weights[h][c0:, c0:c1]  # (L - c0, keys)
            if keep is not None:
                dropped = dropped * keep[h][c0:, c0:c1] * dtype.type(dropout_scale)
            np.matmul(dropped.T, dout[h][c0:], out=dv[h][c0:c1])  # -> (keys, Ev)
        dq[h] *= dtype.type(scale)
        dk[h] *= dtype.type(scale)  # dattn_scores^T @ (q * scale), the scale applied once

    heads = list(np.ndindex(*lead))
    map_pieces(backward_head, heads, worker_count(len(heads)))
    return dq, dk, dv
