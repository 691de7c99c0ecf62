"""The tiled op's loops: one head's tiles at a time, pieces of work side by side on threads.

flash_attention_forward/backward check their arguments and build the arrays below, then call
forward_tiles and backward_tiles. The maths is the tiled op's (its steps 1-6, with 1b
soft-capping and 6b the sink when they are given); what is arranged here, step by step
(docs/backward/tiled.md, "How the loops are arranged"):

1. Pieces of work on threads. The forward's piece is (head h, query block i): it writes only
   its rows of out and lse. The backward's piece is (head h, part n): the key blocks
   j = n, n + parts, n + 2 parts, ... of head h. A key block owns its dk and dv; the piece
   adds its share of dq into the n-th of `parts` dq arrays, summed in order at the end, so
   the numbers do not depend on which thread took which piece. parts is 1 (whole heads)
   when there are BACKWARD_PIECES heads or more, else 2 (MAX_PARTS: one more dq in memory).
   Threads take pieces from a shared queue with BLAS on one thread (fast/_parallel.py), so the
   elementwise passes, which numpy runs on one thread, also run side by side.
2. Two-dimensional tiles (Br, Bc) of one head, computed into scratch arrays that each worker
   reuses: no allocation per tile. A tile's causal mask depends on its offset from the
   diagonal and its shape only, so it is built once per offset and shape (_hidden_pattern).
3. Extra columns fold a pass over the tile into a matrix product:
       qx = [q * scale | -lse]  (L, E + 1),  kx = [k | 1]  (S, E + 1)
       vx = [v | 1]  (S, Ev + 1),            doutx = [dout | -D]  (L, Ev + 1)
   so qx_i @ kx_j^T = s - lse (the backward's P = exp of it, no subtraction pass),
   p @ vx_j = [p @ v_j | rowsum(p)] (the forward's row sums, no summing pass), and
   doutx_i @ vx_j^T = dP - D (the softmax backward's subtraction folded; without dropout).
   doutx is built for one head at a time, in each worker's own buffer.
   The forward uses qx[..., :E] as q * scale before lse is known, and writes -lse after;
   in between, its last column holds -m for the folded tiles (forward_tiles), written
   whenever m changes.
   With a softcap, tanh comes between the product and the shift, so neither pass folds the
   shift into the product: the backward subtracts lse after capping, and the forward takes
   every tile's row max (no -m column).
4. Only the key blocks a query block can see: causal stops at the diagonal, and a sliding
   window of w keys starts w - 1 keys before the block's first query, so a row block meets
   at most ceil((Br + w - 1) / Bc) + 1 key blocks and the cost grows as T * w, not T^2.

Shape legend: L query tokens, S key tokens, E head dim of q and k, Ev head dim of v; batch
dims (...) broadcast, a head h is an index into them; tiles are (rows, cols) <= (Br, Bc).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ._parallel import map_pieces, worker_count

BACKWARD_PIECES = 8  # this many backward pieces or more, where MAX_PARTS allows
MAX_PARTS = 2  # key-block parts per head, each with its own dq: at most one dq more in memory


def key_blocks(r0: int, r1: int, S: int, Bc: int, causal: bool, window) -> range:
    """Key blocks j that some query of rows [r0, r1) sees: keys [r0 - window + 1, r1 - 1]."""
    stop = min(S, r1) if causal else S
    start = 0 if window is None else max(0, r0 - window + 1)
    return range(start // Bc, -(-stop // Bc)) if stop > start else range(0)


def query_blocks(c0: int, c1: int, L: int, Br: int, causal: bool, window) -> range:
    """Query blocks i with some row that sees a key of [c0, c1): rows [c0, c1 - 2 + window]."""
    start = c0 if causal else 0
    stop = L if window is None else min(L, c1 - 1 + window)
    return range(start // Br, -(-stop // Br)) if stop > start else range(0)


def hidden(r0: int, r1: int, c0: int, c1: int, causal: bool, window) -> np.ndarray | None:
    """Which (query, key) pairs of the tile are not seen, (rows, cols) boolean; None when all are.

    Causal: query a sees key b when b <= a; a window w also needs a - b < w.
    """
    if not causal:
        return None
    if c1 - 1 <= r0 and (window is None or r1 - 1 - c0 < window):
        return None  # wholly on or below the diagonal and inside the window
    return _hidden_pattern(r0 - c0, r1 - r0, c1 - c0, window)


@lru_cache(maxsize=64)
def _hidden_pattern(offset: int, rows: int, cols: int, window) -> np.ndarray:
    """hidden()'s mask, which depends on the tile's offset from the diagonal, not its place:
    built once per shape (every diagonal tile of a causal run shares one), read-only."""
    diff = np.arange(offset, offset + rows)[:, None] - np.arange(cols)  # (rows, cols): a - b
    unseen = diff < 0  # key after the query
    if window is not None:
        unseen |= diff >= window  # or a window's length or more before it
    unseen.flags.writeable = False
    return unseen


def tile_scores(
    qx, kx, mask, causal, window, r: slice, c: slice, out, *, softcap=None, tanh_out=None
) -> np.ndarray:
    """Steps 1-2 for one head's tile, written into out (rows, cols) and returned.

    Shapes: qx (L, E'), kx (S, E'), mask (L, S) view or None -> (rows, cols) = qx_r @ kx_c^T.
    softcap c: the scores become c * tanh(scores / c) before the mask; tanh_out (rows, cols)
    then receives tanh(scores / c) (the backward's derivative), else out holds it in between.
    """
    # 1. s = qx_r @ kx_c^T                           (rows, E') @ (E', cols) -> (rows, cols)
    s = np.matmul(qx[r], kx[c].T, out=out)
    # 1b. soft-capping, before the mask: s = c * tanh(s / c), as ops/softcap.py computes it
    if softcap is not None:
        t = s if tanh_out is None else tanh_out
        np.divide(s, softcap, out=t)
        np.tanh(t, out=t)
        np.multiply(t, softcap, out=s)
    # 2. masking: the caller's mask, then causal / window structure
    if mask is not None:
        tile = mask[r, c]
        if tile.dtype == np.bool_:
            np.copyto(s, -np.inf, where=~tile)
        else:
            s += tile
    unseen = hidden(r.start, r.stop, c.start, c.stop, causal, window)
    if unseen is not None:
        np.copyto(s, -np.inf, where=unseen)
    return s


def _heads(batch: tuple) -> list:
    return list(np.ndindex(*batch))


def _rescale_large_rows(m, acc, guard) -> bool:
    """Rows whose sum l passed guard: shift them by log(l), so l = 1 (m, acc in place).

    Returns whether any row was shifted (m changed)."""
    large = acc[:, -1] > guard  # (rows,)
    if not large.any():
        return False
    l = acc[large, -1:]  # (n, 1)
    acc[large] /= l
    m[large] += np.log(l)
    return True


def forward_tiles(
    qx, kx, vx, mask, causal, window, blocks, keep_of, out, lse, *, softcap=None, sink=None
) -> None:
    """Steps 1-6 for every (head, query block): writes out (..., L, Ev) and lse (..., L, 1).

    Shapes: qx (..., L, E + 1) whose first E columns are q * scale, kx (..., S, E + 1),
    vx (..., S, Ev + 1) with a column of ones; mask (..., L, S) view or None.
    keep_of(h, i, j, shape) is tile (i, j)'s dropout keep-mask scaled by 1 / (1 - p), or None.
    softcap: step 1b's cap, or None; sink (..., L, 1) view of each row's sink logit, or None.
    """
    (L, E1), S, Ev = qx.shape[-2:], kx.shape[-2], vx.shape[-1] - 1
    E, dtype, (Br, Bc) = E1 - 1, qx.dtype, blocks
    cap = None if softcap is None else dtype.type(softcap)
    scratch = {}  # worker -> its (Br, Bc) tile and (Br, Ev + 1) product

    guard = np.sqrt(np.finfo(dtype).max)  # row sums kept below it: no overflow in acc

    def piece(w, hi):
        h, i = hi
        if w not in scratch:
            scratch[w] = np.empty((Br, Bc), dtype), np.empty((Br, Ev + 1), dtype)
        tile, prod = scratch[w]
        r = slice(i * Br, min(L, (i + 1) * Br))
        rows = r.stop - r.start
        qx_h, kx_h, v_h = qx[h], kx[h], vx[h]  # (L, E + 1), (S, E + 1), (S, Ev + 1)
        mask_h = None if mask is None else mask[h]
        m = np.full((rows, 1), -np.inf, dtype)  # the row's shift: its running max, or below
        acc = np.zeros((rows, Ev + 1), dtype)  # [running p @ v | running row sum l]
        fold = False  # the first tile sets the shift; later tiles fold it into step 1
        stale = True  # -m not yet written into qx's last column since m last changed
        for j in key_blocks(r.start, r.stop, S, Bc, causal, window):
            c = slice(j * Bc, min(S, (j + 1) * Bc))
            t = tile[:rows, : c.stop - c.start]
            keep = keep_of(h, i, j, t.shape)
            if fold:
                # 1-3 folded: [q_i * scale | -m] @ [k_j | 1]^T = s - m, so p = exp(s - m) in
                # one pass; m is the shift so far (no new max is taken, so nothing rescales)
                if stale:  # m changes rarely: the first tile, a redone tile, a rescale
                    qx_h[r, E:] = -np.where(np.isneginf(m), 0, m)
                    stale = False
                with np.errstate(over="ignore", invalid="ignore"):  # checked just below
                    p = np.exp(tile_scores(qx_h, kx_h, mask_h, causal, window, r, c, t), out=t)
                    part = None if keep is not None else np.matmul(p, v_h[c], out=prod[:rows])
                if keep is None:
                    # 5. [p @ v_j | rowsum(p)] in one product                (rows, Ev + 1)
                    if np.all(part[:, Ev] <= guard):  # else: scores far above m, redo below
                        acc += part
                        stale = _rescale_large_rows(m, acc, guard)
                        continue
                else:
                    l_part = p.sum(axis=-1, keepdims=True)  # 4. l sums the undropped p
                    if np.all(l_part <= guard):
                        acc[:, Ev:] += l_part
                        p *= keep
                        acc[:, :Ev] += np.matmul(p, v_h[c, :Ev], out=prod[:rows, :Ev])
                        stale = _rescale_large_rows(m, acc, guard)
                        continue
            # 1-2. s = masked (q_i * scale) @ k_j^T, soft-capped first (1b)    (rows, cols)
            s = tile_scores(qx_h[:, :E], kx_h[:, :E], mask_h, causal, window, r, c, t, softcap=cap)
            # 3. online softmax: p = exp(s - m_new), what came before rescaled by alpha
            m_new = np.maximum(m, s.max(axis=-1, keepdims=True))  # (rows, 1)
            shift = np.where(np.isneginf(m_new), 0, m_new)  # all -inf so far: shift by 0
            s -= shift
            p = np.exp(s, out=s)  # (rows, cols), 0 where masked
            acc *= np.exp(m - shift)  # alpha, 0 while m was -inf
            # the fold puts s - m in one product, which the cap's tanh cannot follow
            m, fold, stale = m_new, cap is None, True
            if keep is None:
                # 5. acc += p @ [v_j | 1]: p @ v_j and rowsum(p) in one product
                acc += np.matmul(p, v_h[c], out=prod[:rows])
            else:
                # 4. l sums the undropped p; the product takes p * keep / (1 - p)
                acc[:, Ev:] += p.sum(axis=-1, keepdims=True)
                p *= keep
                acc[:, :Ev] += np.matmul(p, v_h[c, :Ev], out=prod[:rows, :Ev])
        if sink is not None:
            # 6b. the sink joins the denominator: l += exp(sink - m), shifted to the larger of
            #     the shift and the sink (a fully masked row gets l = 1: out 0, lse = sink)
            sink_r = sink[h][r]  # (rows, 1)
            shift = np.where(np.isneginf(m), 0, m)  # what acc was shifted by: 0 while m = -inf
            m = np.maximum(shift, sink_r)
            acc *= np.exp(shift - m)  # <= 1
            acc[:, Ev:] += np.exp(sink_r - m)
        # 6. out = acc / l, lse = m + log(l); a fully masked row has l = 0: out 0, lse 0
        l_safe = np.where(acc[:, Ev:] == 0, 1, acc[:, Ev:])  # (rows, 1)
        np.divide(acc[:, :Ev], l_safe, out=out[h][r])
        lse[h][r] = np.where(np.isneginf(m), 0, m) + np.log(l_safe)

    pieces = [
        (h, i)  # the longest rows first: causal row block i meets i + 1 key blocks
        for i in reversed(range(-(-L // Br)))
        for h in _heads(qx.shape[:-2])
    ]
    map_pieces(piece, pieces, worker_count(len(pieces)))


def backward_tiles(
    qx, kx, vx, dout, D, mask, causal, window, blocks, keep_of, dq, dk, dv, *, softcap=None
):
    """The backward of every head's tiles: fills dq (unscaled), dk and dv (zeros given).

    Shapes: qx (..., L, E + 1) = [q * scale | -lse], kx (..., S, E + 1) = [k | 1],
    vx (..., S, Ev + 1) = [v | 1], dout (..., L, Ev), D (..., L) = rowsum(dout * out);
    dq (..., L, E), dk (..., S, E), dv (..., S, Ev). dq gets its scale from the caller.
    softcap: step 1b's cap, or None.
    """
    (L, E1), S, Ev = qx.shape[-2:], kx.shape[-2], vx.shape[-1] - 1
    E, dtype, (Br, Bc) = E1 - 1, qx.dtype, blocks
    cap = None if softcap is None else dtype.type(softcap)
    heads, n_keys = _heads(qx.shape[:-2]), -(-S // Bc)
    # each head's key blocks are dealt out to `parts` pieces in turn (j = n, n + parts, ...),
    # about BACKWARD_PIECES pieces in all, so that a thread slowed by another program holds
    # up little; piece n adds into the n-th dq, and the dqs are summed in order at the end.
    # parts depends on the shapes only, not on the threads: the numbers are the same anywhere
    parts = min(n_keys, MAX_PARTS, -(-BACKWARD_PIECES // max(len(heads), 1)))  # B = 0: none
    pieces = [(n, [(h, j) for j in range(n, n_keys, parts)]) for h in heads for n in range(parts)]
    dqs = [dq] + [np.zeros_like(dq) for _ in range(parts - 1)]
    # the result does not depend on which thread took which piece, or when

    def piece(_, part_keys):
        n, keys = part_keys
        P_buf, dS_buf = np.empty((Br, Bc), dtype), np.empty((Br, Bc), dtype)
        tanh_buf = None if cap is None else np.empty((Br, Bc), dtype)  # 1b's tanh(s / c)
        col_prod = np.empty((Bc, max(E, Ev)), dtype)  # a (cols, E) or (cols, Ev) product
        row_prod = np.empty((Br, E), dtype)  # a (rows, E) product
        doutx = np.empty((L, Ev + 1), dtype)  # [dout | -D] of one head   (L, Ev + 1)
        head = None
        for h, j in keys:
            if h != head:
                head = h
                doutx[:, :Ev] = dout[h]
                np.negative(D[h][:, None], out=doutx[:, Ev:])
            keys_tiles(h, j, dqs[n][h], P_buf, dS_buf, tanh_buf, col_prod, row_prod, doutx)

    def keys_tiles(h, j, dq_h, P_buf, dS_buf, tanh_buf, col_prod, row_prod, doutx):
        c = slice(j * Bc, min(S, (j + 1) * Bc))
        cols = c.stop - c.start
        qx_h, kx_h, vx_h = qx[h], kx[h], vx[h]
        mask_h = None if mask is None else mask[h]
        dk_j, dv_j = dk[h][c], dv[h][c]  # (cols, E), (cols, Ev): this key block's own
        for i in query_blocks(c.start, c.stop, L, Br, causal, window):
            r = slice(i * Br, min(L, (i + 1) * Br))
            rows = r.stop - r.start
            if cap is None:
                # 1-3. P = exp(s - lse): [q * scale | -lse] @ [k | 1]^T, masked, then exp
                P = tile_scores(qx_h, kx_h, mask_h, causal, window, r, c, P_buf[:rows, :cols])
            else:
                # 1-3 with 1b: s = c * tanh(s / c) comes between the product and - lse, so
                # lse is subtracted after it; t = tanh(s / c) is kept for 1b's derivative
                t = tanh_buf[:rows, :cols]
                P = tile_scores(
                    qx_h[:, :E], kx_h[:, :E], mask_h, causal, window, r, c,
                    P_buf[:rows, :cols], softcap=cap, tanh_out=t,
                )  # fmt: skip
                P += qx_h[r, E:]  # - lse
            np.exp(P, out=P)  # (rows, cols), the softmax weights of the tile
            keep = keep_of(h, i, j, P.shape)
            dS = dS_buf[:rows, :cols]
            if keep is None:
                # 5. dv_j += P^T @ dout_i                       (cols, rows) @ (rows, Ev)
                dv_j += np.matmul(P.T, doutx[r, :Ev], out=col_prod[:cols, :Ev])
                # 5, 3. dP - D = [dout_i | -D_i] @ [v_j | 1]^T  (rows, Ev + 1) @ (Ev + 1, cols)
                np.matmul(doutx[r], vx_h[c].T, out=dS)
            else:
                # 5. with dropout: dv_j += dropped^T @ dout_i, dropped = P * keep / (1 - p)
                np.multiply(P, keep, out=dS)
                dv_j += np.matmul(dS.T, doutx[r, :Ev], out=col_prod[:cols, :Ev])
                # 5, 4, 3. dP - D = (dout_i @ v_j^T) * keep / (1 - p) - D_i
                np.matmul(doutx[r, :Ev], vx_h[c, :Ev].T, out=dS)
                dS *= keep
                dS += doutx[r, Ev:]  # + (-D_i)
            # 3. dS = P * (dP - D); masked entries have P = 0, so dS = 0 there
            dS *= P
            if cap is not None:
                # 1b. s = c * tanh(s_1 / c): dS_1 = dS * (1 - t^2)
                np.multiply(t, t, out=t)
                np.subtract(1, t, out=t)
                dS *= t
            # 1. dq_i += dS @ k_j (scaled by the caller); dk_j += dS^T @ (q_i * scale)
            dq_h[r] += np.matmul(dS, kx_h[c, :E], out=row_prod[:rows])
            dk_j += np.matmul(dS.T, qx_h[r, :E], out=col_prod[:cols, :E])

    map_pieces(piece, pieces, worker_count(len(pieces)))
    for part in dqs[1:]:
        dq += part
