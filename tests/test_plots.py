import numpy as np
import pytest

pytest.importorskip("matplotlib")

from npattn.chapter import plots  # noqa: E402
from npattn.chapter.data import TOKENS  # noqa: E402
from npattn.ops.masks import causal_mask  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _axes():
    from matplotlib.figure import Figure

    return Figure().subplots()


def test_heatmap_is_labelled_with_tokens_and_annotates_unmasked_cells():
    ax = _axes()
    w = np.random.default_rng(0).random((6, 6))
    mask = causal_mask(6)
    plots.attention_heatmap(ax, w, title="t", mask=mask)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(TOKENS)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(TOKENS)
    labels = [t.get_text() for t in ax.texts]
    assert len(labels) == mask.sum()
    assert labels[0] == f"{w[0, 0]:.2f}"
    assert ax.get_xlabel() == "key" and ax.get_ylabel() == "query"


def test_heatmap_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"shape \(T, S\)"):
        plots.attention_heatmap(_axes(), np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="tokens must label 7"):
        plots.attention_heatmap(_axes(), np.zeros((7, 7)))


def test_chapter_figures_are_written_as_png(tmp_path):
    paths = plots.write_chapter_figures(tmp_path, weights="npattn")
    assert [p.stem for p in paths] == list(plots.FIGURES)
    for p in paths:
        assert p.read_bytes().startswith(PNG_MAGIC)


def test_heads_figure_has_one_panel_per_head():
    figs = plots.chapter_figures(weights="npattn")
    heads = figs["heads"]
    titles = [ax.get_title() for ax in heads.axes if ax.get_title()]
    assert titles == ["head 1", "head 2"]


def test_svg_is_reproducible():
    a = plots.figure_bytes(plots.chapter_figures(None, "npattn")["causal"], "svg")
    b = plots.figure_bytes(plots.chapter_figures(None, "npattn")["causal"], "svg")
    assert a == b and a.lstrip().startswith(b"<?xml")
    with pytest.raises(ValueError, match="fmt"):
        plots.figure_bytes(None, "jpg")


def test_missing_matplotlib_is_explained(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plots.chapter_figures(weights="npattn")
