"""The figures of the pages beyond chapter 3 (npattn.beyond.plots): their data are the ops'
results, checked here against the definitions, and they draw reproducibly."""

from pathlib import Path

import numpy as np
import pytest

from npattn.beyond import plots as M

DOCS = Path(__file__).resolve().parents[1] / "docs"


def rotation(angle):
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def test_rope_pairs_are_turned_by_the_position():
    v = np.array(M.ROPE_QUERY)
    points = M.rope_pair_data(v, np.arange(6))
    for m, p in enumerate(points):  # head dim 2: theta = 1 radian per position
        np.testing.assert_allclose(p, rotation(m) @ v, atol=1e-12)
    dx = M.rope_backward_data(M.ROPE_DOUT, 2)
    np.testing.assert_allclose(dx, rotation(-2) @ np.array(M.ROPE_DOUT), atol=1e-12)


def test_rope_frequencies_and_llama31_scaling():
    plain, scaled = M.rope_frequency_data()
    E, cfg = M.LLAMA31_HEAD_DIM, M.LLAMA31_FREQ_CONFIG
    np.testing.assert_allclose(plain, M.LLAMA31_BASE ** (-np.arange(0, E, 2) / E), rtol=1e-9)
    wavelen = 2 * np.pi / plain
    short = wavelen < cfg["original_context_length"] / cfg["high_freq_factor"]
    long = wavelen > cfg["original_context_length"] / cfg["low_freq_factor"]
    assert short.any() and long.any()
    np.testing.assert_allclose(scaled[short], plain[short], rtol=1e-9)
    np.testing.assert_allclose(scaled[long], plain[long] / cfg["factor"], rtol=1e-9)
    between = ~short & ~long
    assert np.all((scaled[between] < plain[between]) & (scaled[between] > plain[between] / 8))


def test_sliding_window_masks_follow_the_definition():
    panels = M.sliding_window_data(window=3)
    windows = [None, 3, 3]
    for (mask, q_pos, k_pos), W in zip(panels.values(), windows):
        for a, i in enumerate(q_pos):
            for b, j in enumerate(k_pos):
                want = 0 <= i - j and (W is None or i - j < W)
                assert mask[a, b] == want, (i, j, W)
    *_, (chunk, q_pos, k_pos) = panels.values()
    assert len(q_pos) == 2 and len(k_pos) == 3 + 2 - 1  # W + n - 1 keys


def test_softcap_data_is_c_tanh_and_its_slope():
    s, capped, slope = M.softcap_data(cap=5.0)
    np.testing.assert_allclose(capped, 5.0 * np.tanh(s / 5.0), rtol=1e-12)
    numeric = np.gradient(capped, s)
    np.testing.assert_allclose(slope[1:-1], numeric[1:-1], atol=1e-3)
    assert np.all(np.abs(capped) < 5.0)


@pytest.fixture(scope="module")
def figures():
    pytest.importorskip("matplotlib")
    return M.modern_figures()


def test_every_figure_is_drawn_as_svg_and_reproducibly(figures):
    assert tuple(figures) == M.MODERN_FIGURES
    for name, fig in figures.items():
        svg = M.figure_bytes(fig)
        assert svg.lstrip().startswith(b"<?xml"), name
    first, again = (M.figure_bytes(M.sliding_window_figure()) for _ in range(2))
    assert first == again  # fresh figures, each drawn once, as the docs build does


def test_figure_panels(figures):
    titles = [ax.get_title() for ax in figures["sliding_window"].axes]
    assert titles[:2] == ["causal (no window)", "sliding window W = 3"]
    assert len(figures["rope_rotation"].axes) == 3
    assert len(figures["softcap"].axes) == 2


def test_every_figure_is_shown_on_a_page():
    pages = "".join(p.read_text() for p in (DOCS / "modern").glob("*.md"))
    for name in M.MODERN_FIGURES:
        assert f"](../figures/{name}.svg)" in pages, name
