"""How long OpenBLAS's idle threads keep spinning after a threaded product, and what it costs.

    python benchmarks/blas_spin.py               # 2 threads, pauses 0 to 0.4 s, 9 repeats

Each repeat runs one (2048, 768) @ (768, 2304) float32 np.matmul on BLAS's threads, pauses,
then times the same product split over npattn's threads (npattn.fast._parallel's
split_matmul, BLAS on one thread each). While OpenBLAS's threads still spin, they share the
cores with npattn's. Printed: the median time after each pause, and its ratio to the time
after the longest pause. This is why the fast path splits its own products, and why the
benchmarks pause before each timed run (benchmarks/timing.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from timing import pin_threads

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PAUSES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    pin_threads(args.threads)  # before numpy loads its BLAS
    sys.path.insert(0, ROOT)
    import numpy as np

    from npattn.fast._parallel import split_matmul

    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, 768), dtype=np.float32)
    b = rng.standard_normal((768, 2304), dtype=np.float32)
    times = {pause: [] for pause in PAUSES}
    for _ in range(args.repeats):
        for pause in PAUSES:
            np.matmul(a, b)  # on BLAS's threads, which then spin waiting for more
            time.sleep(pause)
            t0 = time.perf_counter()
            split_matmul(a, b)
            times[pause].append(time.perf_counter() - t0)
    base = float(np.median(times[PAUSES[-1]]))
    print(f"{args.threads} threads, {args.repeats} repeats: split_matmul after np.matmul")
    print("| pause (s) | split_matmul (ms) | / after the longest pause |")
    print("|---:|---:|---:|")
    for pause, ts in times.items():
        med = float(np.median(ts))
        print(f"| {pause:g} | {1e3 * med:.1f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
