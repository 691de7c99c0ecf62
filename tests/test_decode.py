"""`python -m npattn decode` at a tiny size: a row per class, cached decoding equal to the
uncached full forward (float64), the cache's bytes, clear errors and the progress bar."""

import io
import sys

import pytest

from npattn.__main__ import main
from npattn.beyond import decode

ROWS = (
    "GroupedQueryAttention",
    "MultiHeadLatentAttention",
    "MultiHeadLatentAttention, absorbed",
    "MultiHeadAttentionWithSWA, W=2",
    "Qwen3Attention",
    "MultiHeadAttention",
)
TINY = dict(prompt_tokens=4, new_tokens=3, d=8, heads=2, groups=1, dtype="float64", seed=3)


def test_a_row_per_class_and_cached_equals_uncached():
    out = io.StringIO()
    results = decode.run(**TINY, progress=False, out=out)
    lines = out.getvalue().splitlines()
    for name in ROWS:
        assert sum(line.startswith(name + " ") for line in lines) == 1, name
    assert not [line for line in lines if "skipped" in line]
    assert [r.name for r in results] == list(ROWS)
    for r in results:
        assert r.max_diff < 1e-12, r.name
        assert r.cached_tps > 0 and r.uncached_tps > 0
        assert 0 < r.cache_nbytes <= r.cache_allocated_nbytes
    by_name = {r.name: r for r in results}
    n_tokens, itemsize = 4 + 3, 8
    assert by_name["MultiHeadLatentAttention"].cache_nbytes == n_tokens * 16 * itemsize  # C=16
    assert by_name["MultiHeadAttentionWithSWA, W=2"].cache_nbytes == 2 * 2 * 8 * itemsize
    assert by_name["MultiHeadAttention"].cache_nbytes == 2 * n_tokens * 8 * itemsize  # k, v


def test_a_class_that_cannot_be_built_is_skipped_with_its_reason():
    out = io.StringIO()
    decode.run(**{**TINY, "d": 6}, progress=False, out=out)  # head_dim 3: RoPE needs it even
    (line,) = [ln for ln in out.getvalue().splitlines() if ln.startswith("Qwen3Attention")]
    assert "skipped" in line and "even" in line


def test_command_line(capsys):
    args = ["decode", "--prompt-tokens", "2", "--new-tokens", "2", "--d", "4", "--heads", "2"]
    assert main(args + ["--groups", "2", "--no-progress"]) == 0
    assert "GroupedQueryAttention" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(args + ["--groups", "3"])
    assert exit_.value.code == 2
    assert "argument --groups: must divide --heads (2), got 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["decode", "--new-tokens", "0"])
    assert "argument --new-tokens: must be an integer from 1" in capsys.readouterr().err


def test_progress_counter_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now fails
    stream = io.StringIO()
    bar = decode.Progress(3, enabled=True, stream=stream)
    for _ in range(3):
        bar.update(1, "layer")
    bar.close()
    assert "layer 3/3" in stream.getvalue()
    quiet = io.StringIO()
    decode.Progress(3, enabled=False, stream=quiet).update(1, "layer")
    assert quiet.getvalue() == ""


def test_progress_bar_with_tqdm():
    pytest.importorskip("tqdm")
    stream = io.StringIO()
    bar = decode.Progress(4, enabled=True, stream=stream)
    assert bar.bar is not None  # tqdm draws it
    bar.update(4, "layer")
    assert bar.bar.n == 4
    bar.close()
    assert "/4 [" in stream.getvalue()
