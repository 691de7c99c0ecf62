"""benchmarks/bench.py and long_context.py, smoke-tested at tiny sizes: every path runs,
agrees with the chapter's class, and the Markdown gives attn_impl="auto" against both torch
paths and the GEMM roofline."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def is_row_of(line: str, name: str) -> bool:
    """A table row of path `name`, maybe followed by a note: "npattn MHA (auto) (runs ...)"."""
    cell = line.split("|")[1].strip() if line.startswith("|") else ""
    return cell == name or cell.startswith(f"{name} (")


def test_main_section_at_a_tiny_size(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "bench.py"), "--size", "2,8,8,2"]
    cmd += ["--sections", "main", "--repeats", "2", "--warmup", "0", "--threads", "1"]
    cmd += ["--settle-s", "0"]
    done = subprocess.run(
        cmd + ["--out", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    md = (tmp_path / "cpu.md").read_text()
    assert (tmp_path / "cpu.png").stat().st_size > 0
    impls = ("reference", "blocked", "tiled", "auto")
    for name in ("Ch03 MHA", "SDPA", *(f"npattn MHA ({impl})" for impl in impls)):
        row = next(line for line in md.splitlines() if is_row_of(line, name))
        diff = float(row.rstrip(" |").split("|")[-1])  # max |output - Ch03 output|
        assert diff < 1e-5, row
    assert "npattn MHA (auto) / Ch03 MHA" in md and "npattn MHA (auto) / SDPA" in md
    assert "of the roofline" in md
    assert "Threads: 1" in md


def test_long_context_window_section_at_a_tiny_size(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("PYTHONPATH", ROOT)
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "long_context.py"), "--quick"]
    cmd += ["--sections", "window", "--window", "300", "--max-T", "2048"]
    cmd += ["--repeats", "1", "--threads", "1", "--settle-s", "0"]
    done = subprocess.run(
        cmd + ["--out", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    md = (tmp_path / "long_context.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[0] for row in rows] == ["| 1024", "| 2048"]
    assert "tiled, window 300: time ~ T^" in md
    assert "MiB" in md and " n/a |" not in md  # every peak was measured


def test_blas_spin_prints_a_row_per_pause():
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "blas_spin.py"), "--repeats", "1"]
    done = subprocess.run(cmd + ["--threads", "2"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "x |" in line]
    pauses = [float(row.split("|")[1]) for row in rows]
    assert pauses == sorted(pauses) and len(pauses) == 8 and pauses[0] == 0  # smoke test
