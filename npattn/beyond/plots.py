"""Figures for the pages beyond chapter 3: RoPE as a rotation, Llama 3.1's frequency scaling,
the sliding-window mask and soft-capping. Drawn by the docs build (docs/hooks/modern_figures.py).

Every plotted point is computed by the ops (F.rope_forward, F.rope_backward,
F.compute_rope_params, F.sliding_window_mask, F.position_mask, F.softcap_forward) in the
`*_data` functions, which need numpy only; matplotlib is imported inside the drawing functions
and used through its object API with the Agg canvas, as in npattn.chapter.plots.

Shapes: RoPE pairs (P, 2), one 2-D point per position; masks (T, S) boolean, True = attend.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..chapter.data import TOKENS
from ..chapter.plots import _require_matplotlib, figure_bytes

MODERN_FIGURES = ("rope_rotation", "rope_frequencies", "sliding_window", "softcap")
PANEL_INCHES = 3.6
ROPE_QUERY = (1.0, 0.35)  # one pair of dims (x_i, x_{i + E/2}) of a query, drawn as a point
ROPE_KEY = (0.8, -0.55)
ROPE_DOUT = (0.9, 0.6)  # an upstream gradient for the same pair
ROPE_BACKWARD_POSITION = 2
WINDOW = 3
# Llama 3.1's published scaling (its config.json), for a head dim of 128
LLAMA31_HEAD_DIM = 128
LLAMA31_BASE = 500_000.0
LLAMA31_FREQ_CONFIG = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_context_length": 8192,
}
SOFTCAP = 5.0  # small, so the curve bends within the plotted range (Gemma 2 uses 50)
ATTEND_COLOR, MASKED_COLOR = "#3f6fb5", "#eeeeee"


def rope_pair_data(vector, positions, theta_base: float = 10_000) -> np.ndarray:
    """One pair of dims, the 2-D `vector`, rotated by RoPE at each position (head dim 2, so
    inv_freq = 1 and the angle at position m is m radians).

    Shapes: vector (2,), positions (P,) integers -> (P, 2).
    """
    positions = np.asarray(positions)
    cos, sin = F.compute_rope_params(2, theta_base, int(positions.max()) + 1)
    x = np.tile(np.asarray(vector, dtype=np.float64), (len(positions), 1))  # (P, 2)
    out, _ = F.rope_forward(x, cos, sin, positions=positions)
    return out


def rope_backward_data(dout, position: int) -> np.ndarray:
    """The gradient dx = rope_backward(dout) of one pair at one position (head dim 2).

    Shapes: dout (2,) -> dx (2,).
    """
    cos, sin = F.compute_rope_params(2, context_length=position + 1)
    x = np.zeros((1, 2))  # rope is linear: the backward does not depend on x
    _, cache = F.rope_forward(x, cos, sin, positions=np.array([position]))
    return F.rope_backward(np.asarray(dout, dtype=np.float64)[None, :], cache)[0]


def rope_frequency_data(head_dim: int = LLAMA31_HEAD_DIM, theta_base: float = LLAMA31_BASE):
    """inv_freq of every pair, plain and with Llama 3.1's scaling, read off the tables' row
    for position 1 (the angle at position 1 is inv_freq).

    Shapes: -> (plain (E/2,), scaled (E/2,)).
    """
    half = head_dim // 2
    angles = []
    for config in (None, LLAMA31_FREQ_CONFIG):
        cos, sin = F.compute_rope_params(head_dim, theta_base, 2, config)  # (2, E) each
        angles.append(np.arctan2(sin[1, :half], cos[1, :half]))  # (E/2,)
    return tuple(angles)


def sliding_window_data(window: int = WINDOW, T: int = len(TOKENS)) -> dict:
    """The masks of the sliding-window figure, keyed by panel title.

    Shapes: each mask (L, S) boolean, True = attend, with the absolute positions of its
    queries and keys: {title: (mask, q_positions (L,), k_positions (S,))}.
    """
    causal = F.causal_mask(T)
    swa = F.sliding_window_mask(T, window=window)
    # decoding a chunk of n = 2 tokens after T - 2 cached ones: the cache keeps the last
    # `window` positions and the chunk attends the last window + n - 1 keys
    n = 2
    q_pos = np.arange(T - n, T)
    k_pos = np.arange(T - (window + n - 1), T)
    chunk = F.position_mask(q_pos, k_pos, window=window)
    return {
        "causal (no window)": (causal, np.arange(T), np.arange(T)),
        f"sliding window W = {window}": (swa, np.arange(T), np.arange(T)),
        f"cached decoding, n = {n} new tokens:\nthe last W + n − 1 = {window + n - 1} keys": (
            chunk,
            q_pos,
            k_pos,
        ),
    }


def softcap_data(cap: float = SOFTCAP, lim: float = 4.0, n: int = 401):
    """The capped scores and their derivative, from softcap_forward and softcap_backward.

    Shapes: -> scores (n,), capped (n,), slope (n,), on [-lim * cap, lim * cap].
    """
    scores = np.linspace(-lim * cap, lim * cap, n)
    capped, cache = F.softcap_forward(scores, cap)
    slope = F.softcap_backward(np.ones_like(scores), cache)  # d capped / d scores, pointwise
    return scores, capped, slope


def _new_figure(n_panels: int, height: float = PANEL_INCHES):
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(PANEL_INCHES * n_panels + 0.4, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, n_panels, squeeze=False)[0]


def _plane(ax, title: str) -> None:
    ax.set_aspect("equal")
    ax.set_xlim(-1.25, 1.25)
    ax.set_ylim(-1.25, 1.25)
    ax.axhline(0, color="#bbbbbb", lw=0.8)
    ax.axvline(0, color="#bbbbbb", lw=0.8)
    ax.set_xlabel("$x_i$")
    ax.set_ylabel("$x_{i+E/2}$")
    ax.set_title(title, fontsize=10)


def _arrow(ax, p, color, label=None, ls="-"):
    ax.annotate(
        "", xy=tuple(p), xytext=(0, 0), arrowprops=dict(arrowstyle="->", color=color, ls=ls)
    )
    if label:
        ax.text(*(np.asarray(p) * 1.13), label, color=color, fontsize=8, ha="center", va="center")


def _arc(ax, start, end, radius: float, color) -> None:
    """An arc from the direction of point `start` to that of `end`, counter-clockwise."""
    from matplotlib.patches import Arc

    a0, a1 = (np.degrees(np.arctan2(p[1], p[0])) for p in (start, end))
    ax.add_patch(Arc((0, 0), 2 * radius, 2 * radius, theta1=a0, theta2=a1, color=color, lw=1))


def rope_rotation_figure():
    """Three panels: a query pair at the six positions; two (query, key) pairs with the same
    offset and so the same angle between them; the backward's turn by -theta."""
    fig, (a, b, c) = _new_figure(3)
    T = len(TOKENS)
    q = rope_pair_data(ROPE_QUERY, np.arange(T))  # (T, 2)
    _plane(a, "forward: position m turns by m·θ")
    for m in range(T):
        _arrow(a, q[m], "C0", f"{m}: {TOKENS[m]}")

    _plane(b, "q at m, k at n: same m − n, same angle")
    for (m, n), color, radius in (((1, 0), "C1", 0.3), ((4, 3), "C2", 0.45)):
        qm = rope_pair_data(ROPE_QUERY, np.array([m]))[0]
        kn = rope_pair_data(ROPE_KEY, np.array([n]))[0]
        _arrow(b, qm, color, f"q at {m}")
        _arrow(b, kn, color, f"k at {n}", ls="--")
        _arc(b, kn, qm, radius, color)

    m = ROPE_BACKWARD_POSITION
    dx = rope_backward_data(ROPE_DOUT, m)
    _plane(c, f"backward at m = {m}: turn by −m·θ")
    _arrow(c, ROPE_DOUT, "C3", "dout")
    _arrow(c, dx, "C4", "dx")
    _arc(c, dx, ROPE_DOUT, 0.35, "#777777")
    fig.suptitle("RoPE on one pair of dims (head dim 2: θ = 1 radian)", fontsize=11)
    return fig


def rope_frequencies_figure():
    """inv_freq per pair, plain and with Llama 3.1's scaling, on a log scale."""
    plain, scaled = rope_frequency_data()
    fig, (ax,) = _new_figure(1, height=3.4)
    fig.set_size_inches(7.0, 3.4)
    i = np.arange(len(plain))
    ax.semilogy(i, plain, label="θ_i = base^(−2i/E)", color="C0")
    ax.semilogy(i, scaled, label="Llama 3.1 scaling", color="C1", ls="--")
    cfg = LLAMA31_FREQ_CONFIG
    for factor, text in (("low_freq_factor", "λ = L / low"), ("high_freq_factor", "λ = L / high")):
        wavelen = cfg["original_context_length"] / cfg[factor]
        ax.axhline(2 * np.pi / wavelen, color="#999999", lw=0.8, ls=":")
        ax.text(i[-1], 2 * np.pi / wavelen, text, fontsize=8, ha="right", va="bottom")
    ax.set_xlabel("pair i")
    ax.set_ylabel("θ_i (radians per position)")
    ax.set_title(
        f"E = {LLAMA31_HEAD_DIM}, base {LLAMA31_BASE:,.0f}, factor {cfg['factor']:g}, "
        f"L = {cfg['original_context_length']}",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    return fig


def _mask_panel(ax, mask, q_pos, k_pos, title: str) -> None:
    from matplotlib.colors import ListedColormap

    ax.imshow(mask, cmap=ListedColormap([MASKED_COLOR, ATTEND_COLOR]), vmin=0, vmax=1)
    ax.set_xticks(range(len(k_pos)), [f"{p}: {TOKENS[p]}" for p in k_pos], rotation=45, ha="right")
    ax.set_yticks(range(len(q_pos)), [f"{p}: {TOKENS[p]}" for p in q_pos])
    ax.set_xlabel("key j")
    ax.set_ylabel("query i")
    ax.set_title(title, fontsize=9)
    for i, j in zip(*np.nonzero(mask)):
        ax.text(j, i, str(q_pos[i] - k_pos[j]), ha="center", va="center", color="white", fontsize=8)


def sliding_window_figure():
    """The causal mask, the sliding-window mask and a cached decoding chunk, on six tokens;
    each attended cell shows i - j."""
    panels = sliding_window_data()
    fig, axes = _new_figure(len(panels))
    for ax, (title, (mask, q_pos, k_pos)) in zip(axes, panels.items()):
        _mask_panel(ax, mask, q_pos, k_pos, title)
    fig.suptitle("Query i attends key j when 0 ≤ i − j < W (blue; the number is i − j)")
    return fig


def softcap_figure():
    """c·tanh(s/c) against s, and its slope 1 - tanh²(s/c)."""
    scores, capped, slope = softcap_data()
    fig, (a, b) = _new_figure(2, height=3.2)
    a.plot(scores, scores, color="#bbbbbb", lw=0.8, ls=":", label="no cap")
    a.plot(scores, capped, color="C0", label=f"c·tanh(s/c), c = {SOFTCAP:g}")
    for y in (-SOFTCAP, SOFTCAP):
        a.axhline(y, color="#999999", lw=0.8, ls="--")
    a.set_ylim(-1.6 * SOFTCAP, 1.6 * SOFTCAP)
    a.set_xlabel("score s")
    a.set_title("forward", fontsize=10)
    a.legend(fontsize=8)
    b.plot(scores, slope, color="C1")
    b.set_xlabel("score s")
    b.set_title("backward: d capped / ds = 1 − tanh²(s/c)", fontsize=10)
    return fig


def modern_figures() -> dict:
    """Every figure of the pages beyond chapter 3, keyed by the names in MODERN_FIGURES."""
    return {
        "rope_rotation": rope_rotation_figure(),
        "rope_frequencies": rope_frequencies_figure(),
        "sliding_window": sliding_window_figure(),
        "softcap": softcap_figure(),
    }


__all__ = ["MODERN_FIGURES", "figure_bytes", "modern_figures"]
