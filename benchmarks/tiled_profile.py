"""Where the tiled path's time goes: its matrix products, its exp passes, and the rest.

Used by long_context.py (section `profile`), on its runs (make_run): one causal
forward+backward, float32, on one thread (BLAS too), with numpy's matmul and exp timed call
by call. `npattn.fast.tiled_kernels` calls them as np.matmul and np.exp, so for the run its
`np` is a stand-in that times those two and passes everything else through. The rest
(masking, the elementwise products, the running sums, Python's own work) is the total less
the two.
"""

from __future__ import annotations

import time
from collections import defaultdict


class _Timed:
    """numpy with matmul and exp timed into `totals` (seconds, calls, FLOPs)."""

    def __init__(self, np, totals):
        self._np, self._totals = np, totals

    def __getattr__(self, name):
        return getattr(self._np, name)

    def _time(self, kind, fn, args, kwargs, flops=0.0):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        seconds, calls, total_flops = self._totals[kind]
        self._totals[kind] = (seconds + time.perf_counter() - t0, calls + 1, total_flops + flops)
        return out

    def matmul(self, a, b, *args, **kwargs):
        flops = 2.0 * a.shape[-2] * a.shape[-1] * b.shape[-1]
        return self._time("products", self._np.matmul, (a, b, *args), kwargs, flops)

    def exp(self, *args, **kwargs):
        return self._time("exp", self._np.exp, args, kwargs)


def profile(run) -> dict:
    """{kind: (seconds, calls, FLOPs)} for "products", "exp" and "total" of run() (the tiled
    path's forward+backward), on one thread."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from npattn.fast import tiled_kernels

    totals = defaultdict(lambda: (0.0, 0, 0.0))
    with threadpool_limits(limits=1, user_api="blas"):  # one thread: pieces run in turn
        run()  # warm-up
        tiled_kernels.np = _Timed(np, totals)
        try:
            t0 = time.perf_counter()
            run()
            totals["total"] = (time.perf_counter() - t0, 1, 0.0)
        finally:
            tiled_kernels.np = np
    return dict(totals)


def one_thread_ms(run, repeats: int = 3) -> float:
    """run()'s median time in ms with torch on one thread (the first run is a warm-up)."""
    import torch

    threads = torch.get_num_threads()
    times = []
    torch.set_num_threads(1)
    try:
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return 1e3 * sorted(times[1:])[len(times[1:]) // 2]


def section(T: int, shape: str, tiled_run, sdpa_run=None, log=print) -> str:
    """The profile of tiled_run() as a Markdown table, with the products' rate, and
    sdpa_run()'s time on one thread (torch SDPA at the same size) where given.

    shape: the runs' sizes in words, for the text, e.g. "B = 1, 4 heads of 64".
    """
    log(f"profile: tiled path, T={T}, one thread")
    p = profile(tiled_run)
    sdpa_ms = None if sdpa_run is None else one_thread_ms(sdpa_run)
    total = p["total"][0]
    rest = total - p["products"][0] - p["exp"][0]
    rows = [
        ("matrix products (np.matmul)", *p["products"]),
        ("exp passes (np.exp)", *p["exp"]),
        ("the rest: masks, elementwise products, running sums, Python", rest, None, 0.0),
    ]
    lines = [
        f"## Where the tiled path's time goes: T = {T}, one thread",
        "",
        f"One causal forward+backward, {shape}, float32, on one thread "
        "(BLAS too), with every np.matmul and np.exp inside the tile loops timed "
        "(`benchmarks/tiled_profile.py`).",
        "",
        "| part | ms | share | calls | GFLOP/s |",
        "| :-- | --: | --: | --: | --: |",
    ]
    for name, seconds, calls, flops in rows:
        rate = f"{flops / seconds / 1e9:.0f}" if flops else ""
        lines.append(
            f"| {name} | {1e3 * seconds:,.0f} | {100 * seconds / total:.0f}% "
            f"| {calls if calls is not None else ''} | {rate} |"
        )
    lines.append(f"| total | {1e3 * total:,.0f} | 100% | | |")
    if sdpa_ms:
        products_ms = 1e3 * p["products"][0]
        lines += [
            "",
            f"torch SDPA, the same forward+backward on one thread: {sdpa_ms:,.0f} ms. The tiled "
            f"path's matrix products alone take {products_ms / sdpa_ms:.2f}x that, at numpy's "
            "rate for products of these shapes (inner or outer dimension 64 or 65).",
        ]
    return "\n".join(lines)
