"""A bar chart of KV-cache memory per token and per layer (npattn.beyond.kv_memory), one panel per
model configuration. matplotlib is imported inside the function, through its object API with
the Agg canvas, as in npattn.chapter.plots. Drawn by the docs build (docs/hooks/kv_figures.py).
"""

from __future__ import annotations

from .kv_memory import CONFIGS, KINDS, kv_cache_bytes

KV_FIGURE = "kv_memory"  # file stem of the figure in the docs
COLORS = {"MHA": "#4c72b0", "GQA": "#55a868", "MQA": "#c44e52", "MLA": "#8172b2", "SWA": "#dd8452"}


def kv_memory_figure(configs=CONFIGS):
    """Bytes per token and per layer, averaged over the full context (so SWA's window shows),
    for each kind of attention; one panel per configuration."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            "npattn.beyond.kv_plots draws with matplotlib: pip install matplotlib"
        ) from e

    fig = Figure(figsize=(4.2 * len(configs), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(configs), squeeze=False)[0]
    for ax, cfg in zip(axes, configs):
        ctx = cfg.context_length
        per_token = [kv_cache_bytes(k, cfg, ctx) / ctx for k in KINDS]  # bytes / token / layer
        bars = ax.bar(KINDS, per_token, color=[COLORS[k] for k in KINDS])
        ax.bar_label(bars, labels=[f"{b:,.0f}" for b in per_token], fontsize=8)
        ax.set_title(
            f"{cfg.name}: {cfg.num_heads} heads of {cfg.head_dim}, context {ctx:,}\n"
            f"G={cfg.num_kv_groups}, C={cfg.latent_dim}, W={cfg.window:,}, "
            f"{cfg.dtype_bytes} bytes a number",
            fontsize=9,
        )
        ax.set_ylabel("bytes per token, one layer")
        ax.margins(y=0.15)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle("KV cache per token and per layer, averaged over the full context", fontsize=11)
    return fig
