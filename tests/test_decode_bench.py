"""benchmarks/decode.py, smoke-tested at a tiny size: every path of both layers runs and
decodes the same outputs as torch_port's cached layer, the book's classes are the 1.00x
baseline, and --profile prints where npattn's cached decoding spends its time."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = ["--prompt", "5", "--tokens", "3", "--uncached-tokens", "2"]
SIZE += ["--d", "8", "--heads", "4", "--groups", "2"]
PATHS = {"npattn, cache", "npattn, no cache", "torch_port, cache", "book's class, cache"}


def rows(md, layer):
    """{path: (ratio to the book's class, max abs diff to torch_port)} for one layer."""
    out = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0] == layer:
            out[cells[1]] = (float(cells[3].rstrip("x")), float(cells[5]))
    return out


def test_decode_benchmark_at_a_tiny_size(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("threadpoolctl")
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "decode.py"), *SIZE]
    cmd += ["--repeats", "2", "--warmup", "0", "--profile", "--out", str(tmp_path / "d.md")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    md = (tmp_path / "d.md").read_text()
    for layer in ("MHA, 4 heads", "GQA, 4 heads, 2 groups"):
        got = rows(md, layer)
        assert set(got) == PATHS, layer
        assert got["book's class, cache"][0] == 1.0
        for path, (ratio, diff) in got.items():
            assert ratio > 0 and diff < 1e-5, (layer, path)
        assert f"- {layer}: npattn with the cache / book's class" in md
        assert f"spends its time: {layer}" in done.stdout
    assert done.stdout.count("(total, profiled)") == 2
