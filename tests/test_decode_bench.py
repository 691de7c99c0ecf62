"""benchmarks/decode.py, smoke-tested at a tiny size: every torch path runs and decodes the
same outputs; npattn's rows run where npattn has the class and its cache, and are skipped
with a reason otherwise."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = ["--prompt", "5", "--tokens", "3", "--d", "8", "--heads", "4", "--groups", "2"]


def rows(md, layer):
    """{path: (ratio to the book-style class, max abs diff to torch_port)} for one layer."""
    out = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0] == layer:
            out[cells[1]] = (float(cells[3].rstrip("x")), float(cells[5]))
    return out


def test_decode_benchmark_at_a_tiny_size(tmp_path):
    pytest.importorskip("torch")
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "decode.py"), *SIZE]
    cmd += ["--repeats", "2", "--warmup", "0", "--out", str(tmp_path / "decode.md")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    md = (tmp_path / "decode.md").read_text()
    layers = (
        ("MHA, 4 heads", "MultiHeadAttention"),
        ("GQA, 4 heads, 2 groups", "GroupedQueryAttention"),
    )
    for layer, name in layers:
        got = rows(md, layer)
        assert got["book-style torch, cache"][0] == 1.0
        assert {"torch_port, cache", "book-style torch, cache"} <= set(got)
        for path, (_, diff) in got.items():
            assert diff < 1e-5, (layer, path)
        for path in ("npattn, cache", "npattn, no cache"):
            if path not in got:  # skipped, and the reason given
                assert f"skipped npattn {name}" in done.stderr, (layer, path)
