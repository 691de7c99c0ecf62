"""Exercise: the tiled (FlashAttention) backward, from the lse and D = rowsum(dout * out)."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def tiled_sdpa_backward(q, k, v, out, lse, dout, block_size):
    """The attention backward one key block at a time, from the forward's out and lse, never
    forming the whole (L, S) matrix. Attention is softmax(q @ k^T / sqrt(E)) @ v.

    Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev), out (..., L, Ev),
    lse (..., L, 1) the log-sum-exp of each row of scaled scores, dout (..., L, Ev),
    block_size an int >= 1 -> dq (..., L, E), dk (..., S, E), dv (..., S, Ev).
    The checker compares the gradients only: whether you went block by block is yours to keep
    honest.
    """
    raise NotImplementedError("write the tiled attention backward")
'''

HINTS = (
    "A block's weights are P = exp(s - lse) with s its scaled scores: lse makes each row of "
    "the whole P sum to 1 without seeing the other blocks.",
    "The softmax backward needs rowsum(dP * P) over the whole row, which one block does not "
    "have. It equals D = rowsum(dout * out), computed once before the loop.",
    "Per block: dv_j = P^T @ dout, dP = dout @ v_j^T, dS = P * (dP - D), dq += dS @ k_j * scale,"
    " dk_j = dS^T @ q * scale.",
)


def tiled_sdpa_backward(q, k, v, out, lse, dout, block_size):
    scale = 1.0 / np.sqrt(q.shape[-1])
    D = np.sum(dout * out, axis=-1, keepdims=True)  # (..., L, 1) = rowsum(dP * P)
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for j in range(0, k.shape[-2], block_size):
        cols = slice(j, j + block_size)
        k_j, v_j = k[..., cols, :], v[..., cols, :]  # (..., Bc, E), (..., Bc, Ev)
        P = np.exp(q @ np.swapaxes(k_j, -1, -2) * scale - lse)  # (..., L, Bc)
        dv[..., cols, :] = np.swapaxes(P, -1, -2) @ dout  # (..., Bc, Ev)
        dS = P * (dout @ np.swapaxes(v_j, -1, -2) - D)  # (..., L, Bc)
        dq += dS @ k_j * scale
        dk[..., cols, :] = np.swapaxes(dS, -1, -2) @ q * scale
    return dq, dk, dv


def reference(q, k, v, out, lse, dout, block_size):
    _, cache = F.sdpa_forward(q, k, v)
    return F.sdpa_backward(dout, cache)


def make_inputs(p, rng):
    L, S, E, Ev = p["L"], p["S"], p["E"], p["Ev"]  # Ev drawn apart from E
    lead = (p["B"], p["H"])[2 - p["lead"] :]  # 0 to 2 leading axes
    q = rng.standard_normal(lead + (L, E)) * (5.0 if p["big"] else 1.0)
    k = rng.standard_normal(lead + (S, E))
    v = rng.standard_normal(lead + (S, Ev))
    out, cache = F.flash_attention_forward(q, k, v, block_size=p["block_size"])
    dout = rng.standard_normal(out.shape)
    return {
        "q": q,
        "k": k,
        "v": v,
        "out": out,
        "lse": np.array(cache.lse),
        "dout": dout,
        "block_size": p["block_size"],
    }


def _tiled(
    q, k, v, out, lse, dout, block_size, D_from="out", use_lse=True, scale_on=True, width=None
):
    scale = 1.0 / np.sqrt(q.shape[-1] if width is None else width)
    D = np.sum(dout * out, axis=-1, keepdims=True)
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for j in range(0, k.shape[-2], block_size):
        cols = slice(j, j + block_size)
        k_j, v_j = k[..., cols, :], v[..., cols, :]
        s = q @ np.swapaxes(k_j, -1, -2) * scale
        P = np.exp(s - lse) if use_lse else F.softmax(s)  # the block's own softmax
        dv[..., cols, :] = np.swapaxes(P, -1, -2) @ dout
        dP = dout @ np.swapaxes(v_j, -1, -2)
        D_j = D if D_from == "out" else np.sum(dP * P, axis=-1, keepdims=True)
        dS = P * (dP - D_j)
        dq += dS @ k_j * (scale if scale_on else 1.0)
        dk[..., cols, :] = np.swapaxes(dS, -1, -2) @ q * (scale if scale_on else 1.0)
    return dq, dk, dv


@mistake(
    "D_per_block",
    "D from one block's rowsum(dP * P)",
    "A block sees only part of its rows, and rowsum(dP * P) needs every key. The whole row's "
    "value can be had once, before the loop, from two of the arrays you are given.",
)
def _D_per_block(q, k, v, out, lse, dout, block_size):
    return _tiled(q, k, v, out, lse, dout, block_size, D_from="block")


@mistake(
    "block_softmax",
    "each block softmaxed on its own",
    "The weights of a block are "
    "exp(s - lse) with the whole row's lse, not a softmax over the block alone.",
)
def _block_softmax(q, k, v, out, lse, dout, block_size):
    return _tiled(q, k, v, out, lse, dout, block_size, use_lse=False)


@mistake(
    "no_scale",
    "the 1 / sqrt(E) scale is missing from dq and dk",
    "The scores were q @ k^T * scale: dq and dk both carry the scale.",
)
def _no_scale(q, k, v, out, lse, dout, block_size):
    return _tiled(q, k, v, out, lse, dout, block_size, scale_on=False)


@mistake(
    "scale_from_v",
    "the scale taken from v's width Ev",
    "The scale belongs to the scores q @ k^T, whose dot products run over q's and k's last "
    "axis. v's width only sets the width of dv and dout.",
)
def _scale_from_v(q, k, v, out, lse, dout, block_size):
    return _tiled(q, k, v, out, lse, dout, block_size, width=v.shape[-1])


EXERCISE = Exercise(
    name="tiled_sdpa_backward",
    title="Tiled attention backward (lse and D)",
    part="backward",
    docs="backward/tiled.md",
    args=("q", "k", "v", "out", "lse", "dout", "block_size"),
    outputs=("dq", "dk", "dv"),
    stub=STUB,
    hints=HINTS,
    solution=tiled_sdpa_backward,
    reference=reference,
    make_inputs=make_inputs,
    params={
        "lead": (0, 2),
        "B": (1, 2),
        "H": (1, 2),
        "L": (1, 3),
        "S": (1, 6),
        "E": (1, 3),
        "Ev": (1, 3),
        "block_size": (1, 3),
        "big": (0, 1),
    },
    mistakes=(_D_per_block, _block_softmax, _no_scale, _scale_from_v),
)
