"""benchmarks/bench.py and long_context.py, smoke-tested at tiny sizes: every path runs,
agrees with the chapter's class, and the Markdown gives attn_impl="auto" against both torch
paths and the GEMM roofline. The GPU section (cuda.py, with torch_port's modern classes from
modern_paths.py) runs here on the CPU, eager only."""

import argparse
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
TINY = "2,8,8,2"  # B, T, d, H


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


@pytest.fixture
def bench(monkeypatch):
    """The benchmark scripts' sibling modules, importable as in bench.py."""
    torch = pytest.importorskip("torch")
    monkeypatch.syspath_prepend(BENCH)
    monkeypatch.syspath_prepend(ROOT)
    return torch


def test_modern_paths_run_forward_and_backward_on_cpu(bench):
    torch = bench
    import modern_paths as M
    from paths import Size

    skipped = []
    size = Size(*(int(v) for v in TINY.split(",")))
    paths = M.modern_paths(size, "cpu", torch.float32, log=skipped.append)
    assert [p.name for p in paths] == list(M.MODERN_NAMES), skipped
    for p in paths:
        module, x = p.state["module"], p.state["x"]
        assert p.group == M.MODERN_GROUP and p.note.startswith(type(module).__name__)
        p.fwd_bwd()
        assert x.grad is not None and x.grad.shape == x.shape, p.name
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, p.name
        assert all(q.grad is not None for q in module.parameters()), p.name
        assert p.fwd().shape == (size.B, size.T, size.d)
    by_name = {p.name: p for p in paths}
    settings = {  # the note states what the module was built with
        M.GQA: f"{by_name[M.GQA].state['module'].num_kv_groups} key/value groups",
        M.MLA: f"latent_dim {by_name[M.MLA].state['module'].latent_dim}",
        M.SWA: f"window {by_name[M.SWA].state['module'].sliding_window_size}",
        M.QWEN3: f"{by_name[M.QWEN3].state['module'].num_kv_groups} key/value groups",
    }
    for name, text in settings.items():
        assert text in by_name[name].note, (name, by_name[name].note)
    assert by_name[M.QWEN3].state["module"].q_norm is not None  # QK-norm, as the note says


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_gpu_section_tables_from_cpu_numbers(bench, tmp_path):
    """cuda.run on the CPU, eager only: the chapter's, the notebook's and the modern rows, in
    both dtypes, each modern row with its family and a measured ratio to the chapter's class."""
    import cuda
    import modern_paths as M
    import paths as P

    assert cuda.COMPILE_ORDER[-len(M.MODERN_NAMES) :] == M.MODERN_NAMES  # compiled last
    args = argparse.Namespace(
        size=TINY, quick=True, repeats=2, warmup=1, budget_s=None, no_compile=True, out=tmp_path
    )
    logs = []
    cuda.run(args, "cuda.run on cpu", logs.append, device="cpu")
    md = (tmp_path / "gpu.md").read_text()
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines()]
    rows = [r for r in rows if len(r) == 8 and r[2] in ("float32", "bfloat16")]
    for dname in ("float32", "bfloat16"):
        mine = {r[0].split(" (")[0]: r for r in rows if r[2] == dname}
        assert mine[P.CH03][1] == "chapter" and mine[P.CH03][5] == "1.00x"
        assert mine[P.SDPA][1] == "bonus"
        for name in M.MODERN_NAMES:
            row = mine[name]
            assert row[1] == "modern", row
            assert row[5].endswith("x") and float(row[5][:-1]) >= 0, row  # measured, not n/a
    assert "Not run (--no-compile" in md


def test_gpu_section_measures_the_names_asked_for(bench):
    """The compiled runs ask for one path at a time, chapter or modern."""
    import cuda
    import modern_paths as M
    import paths as P

    size, logs = P.Size(*(int(v) for v in TINY.split(","))), []
    for name in (P.CH03, M.MLA):
        paths, _, _ = cuda.measure(size, "cpu", None, False, 1, 0, names={name}, log=logs.append)
        assert [p.name for p in paths] == [name]
        assert paths[0].times["fwd_bwd"], name


def test_modern_tiled_prints_both_impls_of_both_classes():
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "modern_tiled.py"), "--Ts", "64"]
    cmd += ["--repeats", "1", "--threads", "1", "--settle-s", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split(" | ")[1] for line in done.stdout.splitlines() if line.startswith("| 64")]
    assert rows == [
        f"{cls} ({impl})"
        for cls in ("GroupedQueryAttention", "MultiHeadAttentionWithSWA")
        for impl in ("reference", "tiled")
    ]


@pytest.mark.parametrize("script", ["bench.py", "long_context.py"])
def test_a_run_writes_bench_results_and_the_docs_only_when_asked(script):
    """Without --out, results go to bench-results/; --write-docs points at docs/benchmarks/."""
    code = (
        f"import sys; sys.path.insert(0, {BENCH!r}); sys.argv = ['x']\n"
        f"import importlib.util as u; s = u.spec_from_file_location('b', {script!r})\n"
        "m = u.module_from_spec(s); s.loader.exec_module(m)\n"
        "print(m.parse_args([]).out); print(m.parse_args(['--write-docs']).out)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=BENCH, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    default, docs = done.stdout.split()
    assert default == os.path.join(ROOT, "bench-results")
    assert docs == os.path.join(ROOT, "docs", "benchmarks")
