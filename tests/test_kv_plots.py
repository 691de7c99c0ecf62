"""The KV-memory chart: one panel per configuration, one bar per kind of attention, each bar
the bytes per token and per layer of npattn.beyond.kv_memory averaged over the full context."""

import pytest

from npattn.beyond.kv_memory import CONFIGS, KINDS, kv_cache_bytes

pytest.importorskip("matplotlib")


def test_bars_are_the_formulas():
    from npattn.beyond.kv_plots import kv_memory_figure

    fig = kv_memory_figure()
    assert len(fig.axes) == len(CONFIGS)
    for ax, cfg in zip(fig.axes, CONFIGS):
        heights = [p.get_height() for p in ax.patches]
        ctx = cfg.context_length
        assert heights == [kv_cache_bytes(k, cfg, ctx) / ctx for k in KINDS]
        assert [t.get_text() for t in ax.get_xticklabels()] == list(KINDS)
