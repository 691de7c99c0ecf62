"""Attention-weight heatmaps for "Your journey starts with one step", labelled with tokens.

matplotlib is imported inside the functions (npattn itself needs numpy only) and used through
its object API with the Agg canvas: no pyplot, no GUI, no global backend switch.
Used by `python -m npattn demo --plot DIR` and by the docs build (docs/hooks/figures.py).

Shapes: attn_weights (T, S) per panel; tokens T (and S) labels.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .data import TOKENS

FIGURES = ("simple", "trainable", "causal", "dropout", "heads")  # file stems, chapter order
PANEL_INCHES = 3.6
ANNOTATE_DECIMALS = 2
MASKED_COLOR = "#d9d9d9"  # cells a causal mask hides
SVG_SALT = "npattn"  # fixed ids in the SVG, so that rebuilt figures are byte-identical


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "npattn.chapter.plots draws with matplotlib: pip install matplotlib"
        ) from e


def attention_heatmap(
    ax, attn_weights, tokens=TOKENS, title: str | None = None, vmax=None, mask=None
):
    """Draw one (T, S) weight matrix on a matplotlib Axes: queries down, keys across.

    Shapes: attn_weights (T, S), tokens of length >= max(T, S), mask (T, S) boolean with
    True = attend; masked cells are drawn grey and left blank. Returns the image.
    """
    _require_matplotlib()
    from matplotlib import colormaps

    w = np.asarray(attn_weights, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"attn_weights must have shape (T, S), got {w.shape}")
    T, S = w.shape
    if len(tokens) < max(T, S):
        raise ValueError(f"tokens must label {max(T, S)} positions, got {len(tokens)}")
    mask = np.ones((T, S), dtype=bool) if mask is None else np.broadcast_to(mask, (T, S))
    vmax = float(w.max()) if vmax is None else vmax
    cmap = colormaps["Blues"].with_extremes(bad=MASKED_COLOR)
    image = ax.imshow(np.ma.array(w, mask=~mask), cmap=cmap, vmin=0.0, vmax=vmax or 1.0)
    ax.set_xticks(range(S), tokens[:S], rotation=45, ha="right")
    ax.set_yticks(range(T), tokens[:T])
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    for i, j in zip(*np.nonzero(mask)):
        dark = w[i, j] > 0.6 * vmax
        ax.text(
            j,
            i,
            f"{w[i, j]:.{ANNOTATE_DECIMALS}f}",
            ha="center",
            va="center",
            fontsize=7,
            color="white" if dark else "black",
        )
    if title:
        ax.set_title(title, fontsize=10)
    return image


def _figure(panels, suptitle: str, mask=None):
    """A Figure with one heatmap per (weights, title) panel, side by side, and a colour bar.

    mask: (T, S) boolean, True = attend, shared by the panels; hidden cells are grey.
    """
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(
        figsize=(PANEL_INCHES * len(panels) + 0.8, PANEL_INCHES + 0.4), layout="constrained"
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    vmax = max(float(np.max(w)) for w, _ in panels)  # one colour scale across panels
    for ax, (w, title) in zip(axes, panels):
        image = attention_heatmap(ax, w, title=title, vmax=vmax, mask=mask)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="attention weight")
    fig.suptitle(suptitle, fontsize=11)
    return fig


def chapter_figures(walkthrough=None, weights: str = "auto") -> dict:
    """The chapter's heatmaps as matplotlib Figures, keyed by the names in FIGURES.

    walkthrough: npattn.chapter.walkthrough.walk()'s result, computed here (with `weights`)
    when None.
    """
    if walkthrough is None:
        from .walkthrough import walk

        walkthrough = walk(weights)
    s, c, d, m = walkthrough.simple, walkthrough.causal, walkthrough.dropout, walkthrough.multihead
    heads = m["attn_weights"][0]  # (H, T, T), first batch element
    causal = c["mask"]  # (T, T), True = attend
    return {
        "simple": _figure(
            [(s["attn_weights"], "softmax(inputs @ inputs.T)")],
            "3.3 Attention weights, no trainable weights",
        ),
        "trainable": _figure(
            [(c["attn_weights"], "softmax(q @ k.T / sqrt(d_k))")], "3.4 SelfAttention_v2, unmasked"
        ),
        "causal": _figure(
            [(c["attn_weights_causal"], "future masked, rows renormalised")],
            "3.5.1 Causal attention weights",
            causal,
        ),
        "dropout": _figure(
            [(d["attn_weights"], "p = 0.5, kept weights x 2")],
            "3.5.2 Causal weights after dropout",
            causal,
        ),
        "heads": _figure(
            [(w, f"head {h + 1}") for h, w in enumerate(heads)],
            "3.6.2 MultiHeadAttention, weights per head",
            causal,
        ),
    }


def figure_bytes(fig, fmt: str = "svg") -> bytes:
    """Render a Figure to PNG or SVG bytes, reproducibly (no date, fixed SVG ids)."""
    from matplotlib import rc_context

    if fmt not in ("svg", "png"):
        raise ValueError(f"fmt must be 'svg' or 'png', got {fmt!r}")
    buf = io.BytesIO()
    with rc_context({"svg.hashsalt": SVG_SALT, "svg.fonttype": "path"}):
        meta = {"Date": None} if fmt == "svg" else {"Software": None}
        fig.savefig(buf, format=fmt, dpi=120, metadata=meta)
    return buf.getvalue()


def write_chapter_figures(out_dir, walkthrough=None, weights: str = "auto", fmt: str = "png"):
    """Write every chapter heatmap to out_dir/<name>.<fmt>; returns the paths in order."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in chapter_figures(walkthrough, weights).items():
        path = out / f"{name}.{fmt}"
        path.write_bytes(figure_bytes(fig, fmt))
        paths.append(path)
    return paths
