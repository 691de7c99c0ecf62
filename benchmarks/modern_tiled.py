"""The modern classes with attn_impl="reference" and "tiled": time and peak memory against T.

    python benchmarks/modern_tiled.py                 # T = 1024, 4096; 3 repeats
    python benchmarks/modern_tiled.py --Ts 512,2048 --repeats 5

GroupedQueryAttention (12 heads, 4 key/value groups) and MultiHeadAttentionWithSWA (12 heads,
a window of 512), d = 768, B = 1, float32, causal, forward+backward for a random upstream
gradient. Time: medians of interleaved repeats (benchmarks/timing.py, with its pause before
each run); peak memory: the resident set added by one forward+backward, measured after the
timings. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys

from timing import pin_threads

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
D, HEADS, GROUPS, WINDOW = 768, 12, 4, 512


def build(name: str, impl: str, rng: int = 0):
    import numpy as np

    import npattn

    if name == "GroupedQueryAttention":
        m = npattn.GroupedQueryAttention(D, D, 0.0, HEADS, GROUPS, rng=rng, attn_impl=impl)
    else:
        m = npattn.MultiHeadAttentionWithSWA(
            D, D, 0.0, HEADS, sliding_window_size=WINDOW, rng=rng, attn_impl=impl
        )
    return m.astype(np.float32).eval()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--Ts", default="1024,4096", help="comma-separated sequence lengths")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--settle-s", type=float, default=0.3, help="pause before each timed run")
    args = p.parse_args(argv)
    pin_threads(args.threads)  # before numpy loads its BLAS
    sys.path[:0] = [HERE, ROOT]
    import numpy as np
    from timing import fwd_bwd_path, time_and_peak_rows

    rows = []
    for T in (int(t) for t in args.Ts.split(",")):
        rng = np.random.default_rng(T)
        x, g = (rng.standard_normal((1, T, D), dtype=np.float32) for _ in "xg")
        paths = [
            fwd_bwd_path(f"{name} ({impl})", build(name, impl), x, g)
            for name in ("GroupedQueryAttention", "MultiHeadAttentionWithSWA")
            for impl in ("reference", "tiled")
        ]
        rows += time_and_peak_rows(T, paths, args.repeats, args.settle_s)
    print(f"B = 1, d = {D}, {HEADS} heads; GQA with {GROUPS} key/value groups; SWA window {WINDOW}")
    print(f"{args.threads} threads, medians of {args.repeats} interleaved repeats")
    print("| T | class (attn_impl) | fwd+bwd (ms) | peak memory (MiB) |")
    print("|---:|:--|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
