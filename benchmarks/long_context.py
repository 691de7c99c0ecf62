"""Long contexts: npattn's tiled path against torch SDPA, and the sliding window.

    python benchmarks/long_context.py            # both sections: bench-results/long_context.md
    python benchmarks/long_context.py --write-docs  # the same into docs/benchmarks/
    python benchmarks/long_context.py --quick    # smaller T, fewer repeats
    python benchmarks/long_context.py --sections window --window 256

Causal attention alone (no projections), forward+backward, B = 1, H = 4 heads, head dim 64,
float32, a random upstream gradient:
- `sdpa`: F.flash_attention_forward/backward against torch's
  scaled_dot_product_attention(is_causal=True) at T = 4096 and 16384: time as the median of
  per-repeat ratios (both run in every repeat, in alternating order, in one process), and
  peak memory.
- `profile`: the tiled path's time at T = 4096 on one thread, split into its matrix products,
  its exp passes and the rest (benchmarks/tiled_profile.py).
- `window`: the tiled path with a sliding window of --window keys, time and peak memory
  against T, beside the tiled causal path without a window; exponents fitted on log-log.

Peak memory, measured the same way for every path: a fresh subprocess per measurement
builds the inputs and runs one small warm-up, then resets the kernel's high-water mark of its
resident set (writing 5 to /proc/self/clear_refs), runs one forward+backward and reports
VmHWM minus the resident set just before (glibc is first told to return freed blocks at once,
so the resident set follows live arrays). So the inputs are not counted, and numpy's and
torch's allocations are seen alike. Where /proc is not writable it falls back to the
ru_maxrss delta (the peak since the process started, less the resident set before the run).
Threads are pinned (--threads) for numpy's BLAS and torch before either loads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from timing import pin_threads

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HEADS, HEAD_DIM = 4, 64
SDPA_TS = (4096, 16384)  # T of the section against torch SDPA
PROFILE_T = 4096  # T of the profile section
WINDOW_TS = (1024, 2048, 4096, 8192, 16384, 32768)
MIB = 2**20
SETTLE_S = 0.3  # sleep before each timed run, as benchmarks/timing.py explains


def resolve_out(args):
    """--out, or docs/benchmarks/ with --write-docs, or bench-results/ (git-ignored)."""
    if args.out is None:
        parts = ("docs", "benchmarks") if args.write_docs else ("bench-results",)
        args.out = os.path.join(ROOT, *parts)
    return args


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sections", default="sdpa,profile,window")
    p.add_argument("--quick", action="store_true", help="T up to 4096, fewer repeats")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, help="timed rounds per T (default 5, 3 from 16384)")
    p.add_argument("--window", type=int, default=512, help="keys in the sliding window")
    p.add_argument("--max-T", type=int, help="largest T of the window section")
    p.add_argument("--settle-s", type=float, default=SETTLE_S, help="pause before timed runs")
    p.add_argument(
        "--out",
        help="where the tables and plots go (default: bench-results/, or with --write-docs "
        "docs/benchmarks/)",
    )
    p.add_argument(
        "--write-docs",
        action="store_true",
        help="write the site's page docs/benchmarks/long_context.md, not bench-results/",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)  # "path,T,window": one memory run
    return resolve_out(p.parse_args(argv))


def make_run(path: str, T: int, window: int | None):
    """A no-argument forward+backward of `path` on fresh (1, H, T, 64) inputs."""
    import numpy as np

    rng = np.random.default_rng(T)
    q, k, v, g = (rng.standard_normal((1, HEADS, T, HEAD_DIM), dtype=np.float32) for _ in "qkvg")
    if path == "sdpa":
        import torch

        tq, tk, tv = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
        tg = torch.from_numpy(g)

        def run():
            for t in (tq, tk, tv):
                t.grad = None
            out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
            out.backward(tg)

        return run
    from npattn import functional as F

    def run():
        out, cache = F.flash_attention_forward(q, k, v, is_causal=True, window=window)
        F.flash_attention_backward(g, cache)

    return run


def child(spec: str, threads: int) -> None:
    """One memory measurement (runs in its own process); prints JSON."""
    path, T, window = spec.split(",")
    window = None if window == "none" else int(window)
    import numpy as np  # noqa: F401  (loads BLAS before the baseline)

    if path == "sdpa":
        import torch

        torch.set_num_threads(threads)
    from timing import peak_rss_bytes, return_freed_memory

    make_run(path, 256, window and min(window, 256))()  # warm-up: thread pools, kernels
    run = make_run(path, int(T), window)
    return_freed_memory()
    peak, method = peak_rss_bytes(run), "VmHWM reset"
    if peak is None:
        import resource

        before = _rss_bytes()
        run()
        peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before, 0)
        method = "ru_maxrss delta"
    print(json.dumps({"peak": peak, "method": method}))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_bytes(path: str, T: int, window, threads: int) -> int | None:
    """Peak memory of one forward+backward, measured in a fresh subprocess (see the top)."""
    spec = f"{path},{T},{'none' if window is None else window}"
    cmd = [sys.executable, os.path.abspath(__file__), "--child", spec, "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["peak"]


def timed(fn, settle_s: float = SETTLE_S) -> float:
    time.sleep(settle_s)  # the other path's idle threads stop spinning first (timing.py)
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def fit_exponent(points: dict) -> float | None:
    import numpy as np

    Ts = sorted(points)
    if len(Ts) < 2:
        return None
    return float(np.polyfit(np.log(Ts), np.log([points[T] for T in Ts]), 1)[0])


def section_sdpa(args, log) -> str:
    rows = []
    for T in [T for T in SDPA_TS if not args.quick or T <= 4096]:
        repeats = args.repeats or (3 if T >= 16384 else 5)
        runs = {"tiled": make_run("tiled", T, None), "sdpa": make_run("sdpa", T, None)}
        for run in runs.values():
            run()  # warm-up
        times = {name: [] for name in runs}
        for r in range(repeats):
            order = list(runs) if r % 2 == 0 else list(runs)[::-1]
            for name in order:
                times[name].append(timed(runs[name], args.settle_s))
            log(f"sdpa: T={T} repeat {r + 1}/{repeats}")
        del runs
        ratio = statistics.median(a / b for a, b in zip(times["tiled"], times["sdpa"]))
        mem = {name: peak_bytes(name, T, None, args.threads) for name in ("tiled", "sdpa")}
        mem_ratio = mem["tiled"] / mem["sdpa"] if mem["tiled"] and mem["sdpa"] else None
        rows.append(
            f"| {T} | {1e3 * statistics.median(times['tiled']):,.0f} "
            f"| {1e3 * statistics.median(times['sdpa']):,.0f} | **{ratio:.2f}x** "
            f"| {_mib(mem['tiled'])} | {_mib(mem['sdpa'])} "
            f"| {'n/a' if mem_ratio is None else f'{mem_ratio:.2f}x'} | {repeats} |"
        )
    return "\n".join(
        [
            "## Tiled path against torch SDPA",
            "",
            f"Causal, B = 1, H = {HEADS}, head dim {HEAD_DIM}, float32, forward+backward. "
            "Ratio: the median over repeats of tiled time / SDPA time in the same repeat. "
            "Peak memory: a fresh process per measurement (see the top of the script).",
            "",
            "| T | tiled (ms) | SDPA (ms) | tiled / SDPA time | tiled peak (MiB) "
            "| SDPA peak (MiB) | tiled / SDPA peak | repeats |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )


def section_window(args, log) -> tuple[str, dict]:
    W = args.window
    max_T = args.max_T or (8192 if args.quick else WINDOW_TS[-1])
    Ts = [T for T in WINDOW_TS if W < T <= max_T]
    causal_max = 4096 if args.quick else 16384
    results = {f"tiled, window {W}": {}, "tiled, causal (no window)": {}}
    rows = []
    for T in Ts:
        runs = {f"tiled, window {W}": make_run("tiled", T, W)}
        if T <= causal_max:
            runs["tiled, causal (no window)"] = make_run("tiled", T, None)
        repeats = args.repeats or (3 if T >= 8192 else 5)
        for run in runs.values():
            run()  # warm-up
        times = {name: [] for name in runs}
        for r in range(repeats):
            for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
                times[name].append(timed(runs[name], args.settle_s))
        del runs
        cells = [str(T)]
        for name in results:
            if name not in times:
                cells += ["skipped", "skipped"]
                continue
            window = W if "window" in name else None
            ms = 1e3 * statistics.median(times[name])
            mem = peak_bytes("tiled", T, window, args.threads)
            results[name][T] = {"ms": ms, "mem": mem}
            cells += [f"{ms:,.0f}", _mib(mem)]
        rows.append("| " + " | ".join(cells) + " |")
        log(f"window: T={T} done")
    fits = []
    for name, per_T in results.items():
        t_exp = fit_exponent({T: r["ms"] for T, r in per_T.items()})
        m_exp = fit_exponent({T: r["mem"] for T, r in per_T.items() if r["mem"]})
        fits.append(f"- {name}: time ~ T^{_exp(t_exp)}, peak memory ~ T^{_exp(m_exp)}")
    md = [
        f"## Sliding window of {W} keys: cost against T",
        "",
        f"The tiled path with `window={W}` (query i sees keys i - {W - 1} .. i) skips every "
        "tile wholly outside the window, so its work grows as $T w$ (w = window), not $T^2$. "
        "Causal, "
        f"B = 1, H = {HEADS}, head dim {HEAD_DIM}, float32, forward+backward; time: median of "
        "interleaved repeats; peak memory: a fresh process per measurement. The causal path "
        f"without a window runs up to T = {causal_max}.",
        "",
        f"| T | window {W}: time (ms) | window {W}: peak (MiB) | causal: time (ms) "
        "| causal: peak (MiB) |",
        "|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Exponents fitted by least squares on log T, log cost, over the rows above:",
        "",
        *fits,
    ]
    return "\n".join(md), results


def _mib(b) -> str:
    return "n/a" if b is None else f"{b / MIB:,.1f}"


def _exp(e) -> str:
    return "n/a" if e is None else f"{e:.2f}"


def chart(results: dict, filename: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    for name, per_T in results.items():
        Ts = sorted(per_T)
        ax_t.plot(Ts, [per_T[T]["ms"] for T in Ts], marker="o", label=name)
        Tm = [T for T in Ts if per_T[T]["mem"]]
        ax_m.plot(Tm, [per_T[T]["mem"] / MIB for T in Tm], marker="o", label=name)
    for ax, ylabel in ((ax_t, "forward + backward (ms)"), (ax_m, "peak memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("T (tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=8)
    fig.suptitle(f"tiled attention, causal, H={HEADS}, head dim {HEAD_DIM}, float32", fontsize=10)
    fig.tight_layout()
    fig.savefig(filename, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    pin_threads(args.threads)
    sys.path[:0] = [HERE, ROOT]
    if args.child:
        return child(args.child, args.threads)
    import torch

    torch.set_num_threads(args.threads)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    command = " ".join(["python", "benchmarks/long_context.py", *sys.argv[1:]])
    started, load0 = time.time(), os.getloadavg()
    parts = [
        "# Long contexts: tiled attention",
        "",
        f"Command: `{command}`; {os.cpu_count()} cores, {args.threads} threads for numpy's "
        f"BLAS and torch; load average {tuple(round(x, 2) for x in load0)} at the start (the "
        "machine may be shared: ratios of interleaved runs are what carries over). Each "
        f"timed run starts after a {args.settle_s} s pause, so that the other path's idle threads "
        "have stopped spinning.",
    ]
    sections = args.sections.split(",")
    if "sdpa" in sections:
        parts += ["", section_sdpa(args, log)]
    if "profile" in sections:
        import tiled_profile

        tiled, sdpa = make_run("tiled", PROFILE_T, None), make_run("sdpa", PROFILE_T, None)
        shape = f"B = 1, {HEADS} heads of {HEAD_DIM}"
        parts += ["", tiled_profile.section(PROFILE_T, shape, tiled, sdpa, log)]
    if "window" in sections:
        md, results = section_window(args, log)
        parts += ["", md]
        try:
            os.makedirs(args.out, exist_ok=True)
            chart(results, os.path.join(args.out, "long_context.png"))
            parts += ["", "![Sliding window: time and memory against T](long_context.png)"]
        except ImportError as e:
            log(f"skipped the chart: {e}")
    load1 = tuple(round(x, 2) for x in os.getloadavg())
    parts += ["", f"Total time {time.time() - started:.0f} s; load average at the end {load1}."]
    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, "long_context.md")
    with open(out, "w") as f:
        f.write("\n".join(parts) + "\n")
    print("\n".join(parts))


if __name__ == "__main__":
    main()
