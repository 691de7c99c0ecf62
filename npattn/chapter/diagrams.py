"""Diagrams of the attention backward, drawn by code (matplotlib) when the docs are built.

- "attention_graph": one attention head, forward (blue, left to right) and backward (red,
  right to left), every array with its shape and every gradient with its formula.
- "tiling_grid": the tiles of causal tiled attention (Br != Bc), the tiles it skips, and
  the running max m and sum l of the online softmax, computed on seeded random scores.

matplotlib is imported inside the functions (npattn itself needs numpy only) and used through
its object API with the Agg canvas. Used by docs/hooks/figures.py.
Shapes: T query tokens, S key tokens, E head dim, d_in the input width.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from .plots import figure_bytes  # reproducible SVG/PNG bytes, shared with the heatmaps

DIAGRAMS = ("attention_graph", "tiling_grid")  # file stems
FORWARD_COLOR = "#283593"
BACKWARD_COLOR = "#b71c1c"
SKIPPED_COLOR = "#bdbdbd"
MASKED_COLOR = "#eeeeee"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


# name, centre (x, y), forward label, backward label (mathtext)
GRAPH_NODES = (
    ("x", (0.0, 1.0), "$x$\n(T, d_in)", "$dx = dQ\\,W_q + dK\\,W_k + dV\\,W_v$"),
    ("q", (2.6, 2.0), "$Q$ = W_query(x)\n(T, E)", "$dQ = s\\; dS\\, K$"),
    ("k", (2.6, 1.0), "$K$ = W_key(x)\n(T, E)", "$dK = s\\; dS^{\\top} Q$"),
    ("v", (2.6, 0.0), "$V$ = W_value(x)\n(T, E)", "$dV = P^{\\top} dO$"),
    ("S", (5.2, 1.5), "$S = s\\,Q K^{\\top}$, masked\n(T, S)", "$dS = P \\odot (dP - D)$"),
    ("P", (7.6, 1.5), "$P$ = softmax(S)\n(T, S)", "$dP = dO\\, V^{\\top}$"),
    ("O", (10.0, 0.75), "$O = P\\,V$\n(T, E)", "$dO$ (given)"),
)
GRAPH_EDGES = (("x", "q"), ("x", "k"), ("x", "v"), ("q", "S"), ("k", "S"), ("S", "P"),
               ("P", "O"), ("v", "O"))  # fmt: skip


def attention_graph():
    """The forward and backward graph of one attention head, with shapes. -> Figure."""
    fig = _figure(11.0, 4.6)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-1.2, 11.0)
    ax.set_ylim(-1.1, 2.9)
    ax.set_axis_off()
    box = dict(boxstyle="round,pad=0.35", fc="#e8eaf6", ec=FORWARD_COLOR)
    node = {}
    for name, (x, y), fwd, bwd in GRAPH_NODES:
        node[name] = ax.text(x, y, fwd, ha="center", va="center", fontsize=9, bbox=box)
        ax.text(x, y - 0.42, bwd, ha="center", va="top", fontsize=9, color=BACKWARD_COLOR)
    for a, b in GRAPH_EDGES:  # from the right edge of a to the left edge of b, and back
        fwd = dict(arrowstyle="-|>", color=FORWARD_COLOR, shrinkA=7, shrinkB=7)
        bwd = dict(arrowstyle="-|>", color=BACKWARD_COLOR, ls="--", shrinkA=7, shrinkB=7)
        ax.annotate("", xy=(0, 0.75), xycoords=node[b], xytext=(1, 0.75),
                    textcoords=node[a], arrowprops=fwd)  # fmt: skip
        ax.annotate("", xy=(1, 0.25), xycoords=node[a], xytext=(0, 0.25),
                    textcoords=node[b], arrowprops=bwd)  # fmt: skip
    ax.text(-1.1, 2.75, "forward: arrays and shapes", color=FORWARD_COLOR, fontsize=10)
    ax.text(-1.1, 2.5, "backward (dashed): the gradient of each array", color=BACKWARD_COLOR,
            fontsize=10)  # fmt: skip
    ax.text(
        -1.1, -1.0,
        "s = 1/sqrt(E);  D = rowsum(dO ⊙ O);  with dropout, O = dropout(P) V and "
        "dP = (dO Vᵀ) ⊙ keep / (1 − p_drop).  x feeds Q, K and V, so dx adds three terms.",
        fontsize=8.5,
    )  # fmt: skip
    return fig


class RunningSoftmax(NamedTuple):
    """The online softmax of one query row, after each key block it sees."""

    row: int  # the query row t
    m: np.ndarray  # (n_blocks,) running max after key block j
    l: np.ndarray  # (n_blocks,) running sum of exp(s - m) after key block j  # noqa: E741


def running_max_sum(scores_row, t: int, block_cols: int) -> RunningSoftmax:
    """Steps 2 and 3 of the tiled forward for row t of causal scores, block by block.

    Shapes: scores_row (S,); keys j <= t are seen. Blocks wholly after t are skipped.
    """
    m, l, ms, ls = -np.inf, 0.0, [], []  # noqa: E741
    for start in range(0, min(len(scores_row), t + 1), block_cols):
        s = scores_row[start : min(start + block_cols, t + 1)]  # the keys of block j it sees
        m_new = max(m, float(s.max()))
        l = np.exp(m - m_new) * l + float(np.exp(s - m_new).sum())  # noqa: E741
        m = m_new
        ms.append(m)
        ls.append(l)
    return RunningSoftmax(t, np.array(ms), np.array(ls))


def tiling_grid(T: int = 12, block_rows: int = 4, block_cols: int = 3, seed: int = 0):
    """Causal tiles of a (T, T) score matrix with Br x Bc tiles. -> Figure.

    Each computed tile shows the running max m and sum l of the last row of its query block
    after that key block (seeded random scores, E = 4); skipped tiles are grey.
    """
    from matplotlib.patches import Rectangle

    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((T, 4)), rng.standard_normal((T, 4))  # (T, E)
    scores = q @ k.T / 2.0  # (T, T), scale 1/sqrt(4)
    fig = _figure(7.2, 5.6)
    ax = fig.add_axes((0.1, 0.09, 0.62, 0.84))
    ax.set_xlim(0, T)
    ax.set_ylim(T, 0)
    ax.set_aspect("equal")
    ax.set_xticks(np.arange(T) + 0.5, range(T), fontsize=7)
    ax.set_yticks(np.arange(T) + 0.5, range(T), fontsize=7)
    ax.tick_params(length=0)
    ax.set_xlabel(f"key j  (blocks of Bc = {block_cols}: the inner loop, left to right)")
    ax.set_ylabel(f"query t  (blocks of Br = {block_rows}: the outer loop)")
    for t in range(T):
        for j in range(t + 1, T):  # the causal mask hides keys after the query
            ax.add_patch(Rectangle((j, t), 1, 1, fc=MASKED_COLOR, ec="none"))
    for r0 in range(0, T, block_rows):
        r1 = min(r0 + block_rows, T)
        run = running_max_sum(scores[r1 - 1], r1 - 1, block_cols)
        for jb, c0 in enumerate(range(0, T, block_cols)):
            c1 = min(c0 + block_cols, T)
            skipped = c0 > r1 - 1  # the first key comes after the block's last query
            ax.add_patch(Rectangle((c0, r0), c1 - c0, r1 - r0, ec="black", lw=1.6,
                                   fc=SKIPPED_COLOR if skipped else "none"))  # fmt: skip
            label = "skipped" if skipped else f"$m$ = {run.m[jb]:.2f}\n$\\ell$ = {run.l[jb]:.2f}"
            ax.text((c0 + c1) / 2, (r0 + r1) / 2, label, ha="center", va="center",
                    fontsize=7.5, color="#424242" if skipped else FORWARD_COLOR)  # fmt: skip
        ax.add_patch(Rectangle((0, r1 - 1), r1, 1, fc="none", ec=BACKWARD_COLOR, lw=1.0))
    ax.set_title(f"Causal tiles, Br = {block_rows} rows x Bc = {block_cols} keys")
    fig.text(
        0.74, 0.5,
        "Grey tiles: skipped\n(all their keys come\nafter all their queries).\n\n"
        "Light cells: masked\ninside a diagonal tile.\n\n"
        "$m$, $\\ell$: the running max\nand sum of the row\noutlined in red (the\n"
        "last of its block),\nafter that tile.\n\n"
        "After the last tile:\nout = acc / $\\ell$,\nlse = $m + \\log \\ell$.",
        fontsize=8.5, va="center",
    )  # fmt: skip
    return fig


def diagram_figures() -> dict:
    """Every diagram as a matplotlib Figure, keyed by the names in DIAGRAMS."""
    return {"attention_graph": attention_graph(), "tiling_grid": tiling_grid()}


def write_diagrams(out_dir, fmt: str = "png") -> list[Path]:
    """Write every diagram to out_dir/<name>.<fmt>; returns the paths in order."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in diagram_figures().items():
        path = out / f"{name}.{fmt}"
        path.write_bytes(figure_bytes(fig, fmt))
        paths.append(path)
    return paths
