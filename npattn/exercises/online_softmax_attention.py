"""Exercise (forward): attention with an online softmax, one key block at a time."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def online_softmax_attention(q, k, v, block_size):
    """softmax(q @ k^T / sqrt(E)) @ v, reading k and v one block of block_size keys at a time
    and keeping, per query row, a running max m, a running sum l and a running output acc.

    Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev), block_size an int >= 1
    -> out (..., L, Ev). Never form the whole (L, S) matrix; scores may be large (|s| ~ 1000).
    The checker compares the output only: whether you went block by block is yours to keep honest.
    """
    raise NotImplementedError("write attention with an online softmax")
'''

HINTS = (
    "Start with m = -inf, l = 0, acc = 0 for every query row. For each key block: its scores "
    "s, the new max m_new = max(m, rowmax(s)), and p = exp(s - m_new).",
    "Everything summed so far was relative to the old max: multiply l and acc by "
    "alpha = exp(m - m_new) before adding the block's rowsum(p) and p @ v_block.",
    "At the end, out = acc / l. Both l and acc need the alpha rescaling, or the blocks are "
    "weighted against different maxima.",
)


def online_softmax_attention(q, k, v, block_size):
    scale = 1.0 / np.sqrt(q.shape[-1])
    L, S = q.shape[-2], k.shape[-2]
    m = np.full(q.shape[:-2] + (L, 1), -np.inf)  # running row max (..., L, 1)
    l = np.zeros(q.shape[:-2] + (L, 1))  # running sum of exp (..., L, 1)
    acc = np.zeros(q.shape[:-2] + (L, v.shape[-1]))  # running output (..., L, Ev)
    for j in range(0, S, block_size):
        s = q @ np.swapaxes(k[..., j : j + block_size, :], -1, -2) * scale  # (..., L, Bc)
        m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
        p = np.exp(s - m_new)
        alpha = np.exp(m - m_new)  # 0 on the first block (m = -inf)
        l = alpha * l + p.sum(axis=-1, keepdims=True)
        acc = alpha * acc + p @ v[..., j : j + block_size, :]
        m = m_new
    return acc / l


def reference(q, k, v, block_size):
    return (F.scaled_dot_product_attention(q, k, v),)


def make_inputs(p, rng):
    L, S, E, Ev = p["L"], p["S"], p["E"], p["Ev"]  # Ev drawn apart from E
    lead = (p["B"], p["H"])[2 - p["lead"] :]  # 0 to 2 leading axes
    big = 60.0 if p["big"] else 1.0  # scores of a few thousand: exp overflows without the max
    return {
        "q": rng.standard_normal(lead + (L, E)) * big,
        "k": rng.standard_normal(lead + (S, E)) * big,
        "v": rng.standard_normal(lead + (S, Ev)),
        "block_size": p["block_size"],
    }


def _online(q, k, v, block_size, rescale_l=True, rescale_acc=True, use_max=True, width=None):
    scale = 1.0 / np.sqrt(q.shape[-1] if width is None else width)
    L, S = q.shape[-2], k.shape[-2]
    m = np.full(q.shape[:-2] + (L, 1), -np.inf if use_max else 0.0)
    l = np.zeros(q.shape[:-2] + (L, 1))
    acc = np.zeros(q.shape[:-2] + (L, v.shape[-1]))
    for j in range(0, S, block_size):
        s = q @ np.swapaxes(k[..., j : j + block_size, :], -1, -2) * scale
        m_new = np.maximum(m, s.max(axis=-1, keepdims=True)) if use_max else m
        p = np.exp(s - m_new)
        alpha = np.exp(m - m_new)
        l = (alpha if rescale_l else 1.0) * l + p.sum(axis=-1, keepdims=True)
        acc = (alpha if rescale_acc else 1.0) * acc + p @ v[..., j : j + block_size, :]
        m = m_new
    return acc / l


@mistake(
    "acc_not_rescaled",
    "acc is not rescaled when the max grows",
    "When m grows, everything summed so far was weighted against the old max. You correct l "
    "for this; acc was summed against the same old max and needs the same correction.",
)
def _acc_not_rescaled(q, k, v, block_size):
    return _online(q, k, v, block_size, rescale_acc=False)


@mistake(
    "l_not_rescaled",
    "the running sum l is not rescaled",
    "l was summed against the old max. When the max grows, bring the sum so far to the new "
    "max before adding the block's sum, as you do for acc.",
)
def _l_not_rescaled(q, k, v, block_size):
    return _online(q, k, v, block_size, rescale_l=False)


@mistake(
    "no_running_max",
    "no running max: exp overflows",
    "exp of a score of 1000 is inf: "
    "subtract the running max, and rescale what was summed when it grows.",
)
def _no_running_max(q, k, v, block_size):
    return _online(q, k, v, block_size, use_max=False)


@mistake(
    "blocks_averaged",
    "each block normalised on its own, then averaged",
    "Blocks are not"
    " equal: a block's share is its sum of exp relative to the others'. Keep m, l, acc "
    "across blocks and divide once at the end.",
)
def _blocks_averaged(q, k, v, block_size):
    blocks = [slice(j, j + block_size) for j in range(0, k.shape[-2], block_size)]
    outs = [F.scaled_dot_product_attention(q, k[..., b, :], v[..., b, :]) for b in blocks]
    return sum(outs) / len(outs)


@mistake(
    "scale_from_v",
    "the scale taken from v's width Ev",
    "The scale belongs to the scores q @ k^T, whose dot products run over q's and k's last "
    "axis. v's width only sets the width of the output.",
)
def _scale_from_v(q, k, v, block_size):
    return _online(q, k, v, block_size, width=v.shape[-1])


EXERCISE = Exercise(
    name="online_softmax_attention",
    title="Online softmax, one key block at a time",
    part="backward",
    docs="backward/tiled.md",
    args=("q", "k", "v", "block_size"),
    outputs=("out",),
    stub=STUB,
    hints=HINTS,
    solution=online_softmax_attention,
    reference=reference,
    make_inputs=make_inputs,
    params={
        "lead": (0, 2),
        "B": (1, 2),
        "H": (1, 2),
        "L": (1, 3),
        "S": (1, 7),
        "E": (1, 3),
        "Ev": (1, 3),
        "block_size": (1, 3),
        "big": (0, 1),
    },
    mistakes=(
        _acc_not_rescaled,
        _l_not_rescaled,
        _no_running_max,
        _blocks_averaged,
        _scale_from_v,
    ),
)
