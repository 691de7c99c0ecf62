"""Timing, memory and FLOP counting for the benchmarks (no numpy or torch at import time).

Interleaved medians: every repeat runs every path once, in a rotated order, so load from
other processes on a shared machine spreads over all paths instead of hitting one.
Settling: before each timed run the benchmark sleeps SETTLE_S. After a threaded product,
OpenBLAS's idle threads spin on the cores for about a quarter of a second waiting for more
work (OpenMP's, which torch uses, for a shorter while; benchmarks/blas_spin.py measures it);
without the pause the next path would share the cores with the previous path's spinning
threads, and a path's time would depend on its neighbour.
Peak memory: the process's peak resident set (VmHWM) is reset through /proc/self/clear_refs
before one run and read after it, so numpy and torch allocations are measured alike.
"""

from __future__ import annotations

import ctypes
import gc
import os
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

STATUS = "/proc/self/status"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def pin_threads(n: int) -> None:
    """Set the thread counts of numpy's BLAS, torch and MKL to n; call it before numpy or
    torch is imported, since they read these when they load their thread pools."""
    for var in THREAD_VARS:
        os.environ[var] = str(n)


@dataclass
class Path:
    """One implementation under test: callables for the forward and forward+backward."""

    name: str
    group: str  # "torch", "npattn", or "modern" (torch_port's modern classes)
    fwd: Callable[[], object] | None
    fwd_bwd: Callable[[], object] | None
    sync: Callable[[], None] = lambda: None  # e.g. torch.cuda.synchronize
    note: str = ""
    state: dict = field(default_factory=dict)  # e.g. {"module": m}, read by fwd and fwd_bwd
    times: dict = field(default_factory=lambda: {"fwd": [], "fwd_bwd": []})
    peak_bytes: dict = field(default_factory=dict)

    def median_ms(self, kind: str) -> float | None:
        ts = self.times[kind]
        return 1e3 * statistics.median(ts) if ts else None

    def spread_ms(self, kind: str) -> float | None:
        """Half the interquartile range, in ms: how much the repeats disagree."""
        ts = sorted(self.times[kind])
        if len(ts) < 4:
            return None
        q = statistics.quantiles(ts, n=4)
        return 1e3 * (q[2] - q[0]) / 2


SETTLE_S = 0.3  # seconds of sleep before each timed run: the previous path's threads idle


def time_once(fn: Callable[[], object], sync: Callable[[], None], settle_s: float = 0.0) -> float:
    sync()
    if settle_s:
        time.sleep(settle_s)
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def run_interleaved(
    paths: list[Path], repeats: int, warmup: int, log=print, settle_s: float = SETTLE_S
) -> None:
    """Warm every path up, then `repeats` rounds, each timing every path once (rotated).

    settle_s: the pause before each timed run (see the top of this file).
    """
    kinds = ("fwd", "fwd_bwd")
    for p in paths:
        for kind in kinds:
            fn = getattr(p, kind)
            for _ in range(warmup if fn is not None else 0):
                time_once(fn, p.sync)
    for r in range(repeats):
        order = paths[r % len(paths) :] + paths[: r % len(paths)]
        for p in order:
            for kind in kinds:
                fn = getattr(p, kind)
                if fn is not None:
                    p.times[kind].append(time_once(fn, p.sync, settle_s))
        log(f"  repeat {r + 1}/{repeats} done")


def _status_kib(field_name: str) -> int | None:
    try:
        with open(STATUS) as f:
            m = re.search(rf"{field_name}:\s+(\d+) kB", f.read())
        return int(m.group(1)) if m else None
    except OSError:
        return None


def return_freed_memory() -> bool:
    """Make glibc give freed memory back at once, so the resident set follows live arrays.

    By default glibc keeps freed blocks below a moving threshold (up to 32 MiB) for reuse,
    and a later peak hides inside them. Called after the timings: it slows allocation.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameter numbers
    libc.mallopt(m_mmap_threshold, 1 << 16)  # blocks over 64 KiB: mmap, unmapped on free
    libc.mallopt(m_trim_threshold, 1 << 16)
    libc.malloc_trim(0)
    return True


def peak_rss_bytes(fn: Callable[[], object]) -> int | None:
    """Peak resident memory added while fn runs, in bytes (None where Linux's /proc is absent).

    Resets the high-water mark first (writing 5 to /proc/self/clear_refs), so the number is
    this call's own peak above the memory already in use. Call return_freed_memory() first.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return max(peak - before, 0) * 1024


def mha_flops(B: int, T: int, d_in: int, d_out: int, backward: bool) -> float:
    """Nominal FLOPs of the chapter's MultiHeadAttention: its matrix products, full (T, T).

    Forward: q, k, v projections 3 * 2 B T d_in d_out, out_proj 2 B T d_out^2, scores and
    context 2 * 2 B T^2 d_out (summed over heads). The backward costs twice the forward.
    Paths that skip the causal upper triangle do less real work for the same nominal count.
    """
    fwd = 6 * B * T * d_in * d_out + 2 * B * T * d_out**2 + 4 * B * T * T * d_out
    return 3 * fwd if backward else fwd


def machine_note() -> dict:
    """CPU model, core count and load average, for the output's header."""
    info = {"cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
        info["cpu"] = m.group(1).strip() if m else "unknown"
    except OSError:
        info["cpu"] = "unknown"
    try:
        info["load"] = tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        info["load"] = None
    return info


def fwd_bwd_path(name: str, module, x, g) -> Path:
    """A Path that times an npattn module's forward and backward together (no forward alone).

    Shapes: x (B, T, d), g the upstream gradient, shaped as the output.
    """

    def fwd_bwd():
        module(x)
        return module.backward(g)

    return Path(name, "npattn", None, fwd_bwd)


def time_and_peak_rows(T: int, paths: list[Path], repeats: int, settle_s: float) -> list[str]:
    """Time the paths' forward+backward in interleaved repeats, then measure each one's peak
    memory alone: Markdown rows | T | name | median ms | peak MiB |."""
    run_interleaved(paths, repeats, 1, log=lambda _: None, settle_s=settle_s)
    return_freed_memory()
    rows = []
    for path in paths:
        peak = peak_rss_bytes(path.fwd_bwd)
        mem = "n/a" if peak is None else f"{peak / 2**20:,.0f}"
        rows.append(f"| {T} | {path.name} | {path.median_ms('fwd_bwd'):,.0f} | {mem} |")
    return rows
