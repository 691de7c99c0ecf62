"""npattn.chapter.diagrams: the backward graph and the tiling grid, drawn by code for the docs."""

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from npattn import functional as F  # noqa: E402
from npattn.chapter import diagrams  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_every_diagram_is_written_as_png_and_svg(tmp_path):
    paths = diagrams.write_diagrams(tmp_path, fmt="png")
    assert [p.stem for p in paths] == list(diagrams.DIAGRAMS)
    for p in paths:
        assert p.read_bytes().startswith(PNG_MAGIC), p
    svg = diagrams.write_diagrams(tmp_path, fmt="svg")
    assert all(p.read_bytes().lstrip().startswith(b"<?xml") for p in svg)
    with pytest.raises(ValueError, match="fmt must be"):
        diagrams.figure_bytes(diagrams.attention_graph(), fmt="gif")


def test_svg_is_reproducible():
    a = diagrams.figure_bytes(diagrams.tiling_grid())
    b = diagrams.figure_bytes(diagrams.tiling_grid())
    assert a == b


def test_graph_names_every_gradient_of_the_backward():
    text = " ".join(t.get_text() for t in diagrams.attention_graph().axes[0].texts)
    for grad in ("dV = P^{\\top} dO", "dP = dO\\, V^{\\top}", "dS = P \\odot (dP - D)",
                 "dQ = s\\; dS\\, K", "dK = s\\; dS^{\\top} Q"):  # fmt: skip
        assert grad in text, grad
    for shape in ("(T, d_in)", "(T, E)", "(T, S)"):
        assert shape in text


@pytest.mark.parametrize("T, br, bc", [(12, 4, 3), (7, 2, 5), (5, 5, 5)])
def test_grid_skips_exactly_the_tiles_after_the_diagonal(T, br, bc):
    texts = [t.get_text() for t in diagrams.tiling_grid(T, br, bc).axes[0].texts]
    expected = sum(c0 > min(r0 + br, T) - 1 for r0 in range(0, T, br) for c0 in range(0, T, bc))
    assert texts.count("skipped") == expected


def test_running_max_and_sum_end_at_the_tiled_ops_lse():
    rng = np.random.default_rng(1)
    T, br, bc = 12, 4, 3
    q, k, v = (rng.standard_normal((T, 4)) for _ in range(3))
    _, cache = F.flash_attention_forward(q, k, v, is_causal=True, block_size=(br, bc))
    scores = q @ k.T / 2.0  # scale 1 / sqrt(4)
    for t in range(T):
        run = diagrams.running_max_sum(scores[t], t, bc)
        assert len(run.m) == t // bc + 1  # the key blocks row t sees
        assert np.all(np.diff(run.m) >= 0)  # a running max never decreases
        lse = run.m[-1] + np.log(run.l[-1])
        np.testing.assert_allclose(lse, np.log(np.exp(scores[t, : t + 1]).sum()), rtol=1e-12)
        np.testing.assert_allclose(lse, cache.lse[t, 0], rtol=1e-12)


def test_grid_prints_the_running_values_it_computed():
    fig = diagrams.tiling_grid(12, 4, 3, seed=0)
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((12, 4)), rng.standard_normal((12, 4))
    run = diagrams.running_max_sum((q @ k.T / 2.0)[3], 3, 3)  # the first block's last row
    labels = [t.get_text() for t in fig.axes[0].texts if "=" in t.get_text()]
    assert labels[0] == f"$m$ = {run.m[0]:.2f}\n$\\ell$ = {run.l[0]:.2f}"
    assert labels[1] == f"$m$ = {run.m[1]:.2f}\n$\\ell$ = {run.l[1]:.2f}"


def test_npattn_does_not_import_matplotlib():
    code = "import sys, npattn, npattn.chapter.diagrams; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
