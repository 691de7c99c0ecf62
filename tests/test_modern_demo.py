"""The demo's section beyond chapter 3: each modern class on the chapter's six tokens.

Expected values are computed here from the classes built directly (not through
npattn.beyond.demo), and compared with what the section prints.
"""

import numpy as np
import pytest

import npattn
from npattn.beyond import demo as modern_demo
from npattn.chapter import demo
from npattn.chapter.data import chapter_batch


def expected_modules():
    return {
        "GroupedQueryAttention": npattn.GroupedQueryAttention(3, 4, 0.0, 2, 1, rng=123),
        "MultiHeadLatentAttention": npattn.MultiHeadLatentAttention(
            3, 4, 0.0, 2, latent_dim=2, rng=123
        ),
        "MultiHeadAttentionWithSWA": npattn.MultiHeadAttentionWithSWA(
            3, 4, 0.0, 2, sliding_window_size=3, rng=123
        ),
        "Qwen3Attention": npattn.Qwen3Attention(3, 2, 1, head_dim=2, context_length=6, rng=123),
    }


@pytest.fixture(scope="module")
def section():
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summaries = modern_demo.demo_modern(chapter_batch())
    return out.getvalue(), summaries


def test_section_runs_every_modern_class_on_the_chapter_batch(section):
    text, summaries = section
    assert "Beyond chapter 3" in text
    names = [type(m).__name__ for m in modern_demo.modern_modules().values()]
    assert sorted(names) == sorted(expected_modules())
    for name, m in expected_modules().items():
        y = m(chapter_batch())
        assert f"{name}(" in text
        assert f"output shape {y.shape}" in text
        last = ", ".join(f"{v:{' ' if np.any(y[0, -1] < 0) else ''}.4f}" for v in y[0, -1])
        assert f"last token: [{last}]" in text, name
    assert len(summaries) == 4


def test_section_prints_the_cache_each_class_keeps(section):
    text, _ = section
    for name, m in expected_modules().items():
        m(chapter_batch(), use_cache=True)
        shapes = [
            f"{n} {getattr(m, n).shape}"
            for n in ("cache_k", "cache_v", "cache_c_kv")
            if getattr(m, n, None) is not None
        ]
        assert f"cache: {', '.join(shapes)}, {m.cache_nbytes} bytes" in text, name
    assert "cache_k (2, 2, 3, 2)" in text  # the window keeps 3 of the 6 positions


def test_section_reports_gradient_checks_that_can_fail(section, monkeypatch, capsys):
    text, summaries = section
    assert text.count(": agree, largest error") == 4
    assert all(s["report"].passed for s in summaries)
    assert all(s["worst"].max_abs_err < 1e-6 for s in summaries)

    # a backward off by a factor of 2 must be reported
    original = npattn.GroupedQueryAttention.backward
    monkeypatch.setattr(
        npattn.GroupedQueryAttention, "backward", lambda self, dy: 2 * original(self, dy)
    )
    modern_demo.demo_modern()
    assert "GroupedQueryAttention" in capsys.readouterr().out.split("DISAGREE")[0]


def test_chapter_demo_ends_with_the_section(capsys):
    assert demo.main(weights="npattn") == 0
    text = capsys.readouterr().out
    assert text.index("the backward pass") < text.index("Beyond chapter 3: the attention")
