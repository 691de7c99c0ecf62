"""Time and peak memory of reference vs tiled attention, forward + backward, as T grows.

    python benchmarks/tiled_scaling.py [--out docs/benchmarks/tiled.md] [--blas-threads 1]

Causal, float32, B = 1, H = 1 (--heads), E = 64. Time: the median of --repeats runs, reference
and tiled interleaved in one process so that load from other processes hits both alike.
Peak memory: tracemalloc (numpy reports its array allocations to it), one run each, after a
warm-up. Reference is skipped above --reference-max-tokens (its (T, T) arrays need ~12 T^2 bytes:
~3 GiB at T = 16384). Prints a Markdown table, then a check at T = 8192: tiled peak
<= 10% of reference's and tiled time <= 1.5x reference's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc

SIZES = (256, 512, 1024, 2048, 4096, 8192, 16384)
CHECK_T, CHECK_PEAK_RATIO, CHECK_TIME_RATIO = 8192, 0.10, 1.5
MIB = 2**20
PREAMBLE = """# Tiled attention: time and memory as T grows

Written by `benchmarks/tiled_scaling.py` (the tables below say how each was run). Forward
plus backward of causal attention, reference (`F.sdpa_forward/backward`, which holds the
`(T, T)` weights) against tiled (`F.flash_attention_forward/backward`,
[derivation](../backward/tiled.md)). Reference's peak memory grows as T^2, tiled's as T.

The machine's 2 cores were shared with other jobs while these ran (the load average is
given), so times are noisy; each is the median of several runs, reference and tiled
interleaved. The tiled path makes many small matmuls, and OpenBLAS's default of one thread
per core is erratic on busy cores: a call can wait for a descheduled thread. One BLAS
thread per process (`--blas-threads 1`, i.e. `OPENBLAS_NUM_THREADS=1`) gives stable times.
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--heads", type=int, default=1, help="H, with B = 1")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--reference-max-tokens", type=int, default=8192)
    p.add_argument("--block-size", type=int, default=None, help="default: the op's own choice")
    p.add_argument("--blas-threads", type=int, default=None, help="set before numpy loads")
    p.add_argument("--out", help="also write the Markdown to this file")
    p.add_argument("--append", action="store_true", help="append to --out instead")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.blas_threads is not None:  # must happen before numpy is first imported
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.blas_threads)
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from npattn import functional as F

    def reference(q, k, v, g):
        out, cache = F.sdpa_forward(q, k, v, is_causal=True)
        F.sdpa_backward(g, cache)

    def tiled(q, k, v, g):
        out, cache = F.flash_attention_forward(q, k, v, is_causal=True, block_size=args.block_size)
        F.flash_attention_backward(g, cache)
        blocks.add(cache.blocks)

    def seconds(fn, *a):
        t0 = time.perf_counter()
        fn(*a)
        return time.perf_counter() - t0

    def peak_bytes(fn, *a):
        tracemalloc.start()
        fn(*a)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    blocks = set()  # the (Br, Bc) the tiled op used
    load_before = os.getloadavg()[0]
    rows = []
    for T in args.sizes:
        rng = np.random.default_rng(0)
        q, k, v, g = (
            rng.standard_normal((1, args.heads, T, 64)).astype(np.float32) for _ in range(4)
        )  # (B, H, T, E) each
        impls = {"tiled": tiled}
        if T <= args.reference_max_tokens:
            impls = {"reference": reference, **impls}
        times = {name: [] for name in impls}
        peaks = {name: peak_bytes(fn, q, k, v, g) for name, fn in impls.items()}  # + warm-up
        for _ in range(args.repeats):
            for name, fn in impls.items():
                times[name].append(seconds(fn, q, k, v, g))
        med = {name: statistics.median(ts) for name, ts in times.items()}
        rows.append((T, med, peaks))
        print(f"T={T} done", file=sys.stderr, flush=True)
    load_after = os.getloadavg()[0]

    md = report(args, rows, np, (load_before, load_after), sorted(blocks))
    print(md)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "a" if args.append else "w") as f:
            f.write(("\n" if args.append else PREAMBLE + "\n") + md + "\n")


def report(args, rows, np, loads, blocks) -> str:
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "unset (OpenBLAS default: one per core)")
    cmd = "python " + " ".join(["benchmarks/tiled_scaling.py"] + sys.argv[1:])
    lines = [
        f"## Reference vs tiled attention, forward + backward (BLAS threads: {threads})",
        "",
        f"`{cmd}`",
        "",
        f"Causal, float32, B = 1, H = {args.heads}, E = 64, tiles (Br, Bc) "
        f"{', '.join(map(str, blocks))}; numpy {np.__version__}, {os.cpu_count()} cores, "
        f"load average {loads[0]:.1f} before and {loads[1]:.1f} after. Time: median of "
        f"{args.repeats} runs, reference and tiled interleaved. Peak: tracemalloc.",
        "",
        "| T | reference time (ms) | tiled time (ms) | tiled / reference time "
        "| reference peak (MiB) | tiled peak (MiB) | tiled / reference peak |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for T, med, peaks in rows:
        if "reference" in med:
            nt, tt, np_, tp = med["reference"], med["tiled"], peaks["reference"], peaks["tiled"]
            cells = (
                f"{nt * 1e3:.1f}",
                f"{tt * 1e3:.1f}",
                f"{tt / nt:.2f}",
                f"{np_ / MIB:.1f}",
                f"{tp / MIB:.1f}",
                f"{tp / np_:.3f}",
            )
        else:
            tt, tp = f"{med['tiled'] * 1e3:.1f}", f"{peaks['tiled'] / MIB:.1f}"
            cells = ("skipped", tt, "", "skipped", tp, "")
        lines.append(f"| {T} | " + " | ".join(cells) + " |")
    if any("reference" not in med for _, med, _ in rows):
        lines += [
            "",
            f"Reference is skipped above T = {args.reference_max_tokens}: its (T, T) float32 "
            f"arrays peak at about 12 T^2 bytes (3 GiB at T = 16384), at seconds per run.",
        ]
    check = {T: (med, peaks) for T, med, peaks in rows if T == CHECK_T and "reference" in med}
    if check:
        med, peaks = check[CHECK_T]
        peak_ratio = peaks["tiled"] / peaks["reference"]
        time_ratio = med["tiled"] / med["reference"]
        ok_peak, ok_time = peak_ratio <= CHECK_PEAK_RATIO, time_ratio <= CHECK_TIME_RATIO
        lines += [
            "",
            f"Check at T = {CHECK_T}: tiled peak / reference peak = {peak_ratio:.3f} "
            f"(<= {CHECK_PEAK_RATIO}: {'pass' if ok_peak else 'FAIL'}); tiled time / reference "
            f"time = {time_ratio:.2f} (<= {CHECK_TIME_RATIO}: {'pass' if ok_time else 'FAIL'}).",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
