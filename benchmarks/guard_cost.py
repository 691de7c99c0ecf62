"""The cost of the cache guard (npattn/_guard.py): MultiHeadAttention forward+backward with the
guard on and off, interleaved in one process, and the ratio of the medians.

    python benchmarks/guard_cost.py                 # B=4, T=512, d=768, 12 heads, float32
    python benchmarks/guard_cost.py --size 2,256,256,4 --repeats 5

The guard copies what a cache would otherwise share with the caller (x, weights, masks, the
tiled output) and marks cached arrays read-only; `_guard.enabled = False` keeps references,
as npattn did before it. Also printed: the peak memory of one forward+backward, on and off.
"""

from __future__ import annotations

import argparse
import os
import sys

from timing import pin_threads

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", default="4,512,768,12", help="B,T,d,H")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    pin_threads(args.threads)  # before numpy loads its BLAS
    sys.path[:0] = [HERE, ROOT]
    from paths import Size, numpy_inputs
    from timing import Path, peak_rss_bytes, return_freed_memory, run_interleaved

    import npattn
    from npattn import _guard

    size = Size(*(int(n) for n in args.size.split(",")))
    x, g = numpy_inputs(size)
    paths = []
    for impl in ("reference", "blocked", "tiled"):
        m = npattn.MultiHeadAttention(size.d, size.d, size.T, 0.0, size.H, rng=0, attn_impl=impl)
        m.eval()
        for on in (True, False):

            def fwd_bwd(m=m, on=on):
                _guard.enabled = on
                try:
                    m(x)
                    return m.backward(g)
                finally:
                    _guard.enabled = True

            paths.append(Path(f"{impl}, guard {'on' if on else 'off'}", "npattn", None, fwd_bwd))
    print(
        f"MultiHeadAttention forward+backward, B={size.B} T={size.T} d={size.d} H={size.H}, "
        f"float32, {args.threads} threads, {args.repeats} interleaved repeats"
    )
    run_interleaved(paths, args.repeats, args.warmup, log=lambda s: None)
    return_freed_memory()
    peaks = {p.name: peak_rss_bytes(p.fwd_bwd) for p in paths}
    print(f"{'path':<20} {'median ms':>10} {'spread ms':>10} {'peak MiB':>9}")
    for p in paths:
        peak = peaks[p.name]
        mib = f"{peak / 2**20:9.1f}" if peak is not None else f"{'-':>9}"
        print(
            f"{p.name:<20} {p.median_ms('fwd_bwd'):10.1f} {p.spread_ms('fwd_bwd') or 0:10.1f} {mib}"
        )
    for on, off in zip(paths[::2], paths[1::2]):
        ratio = on.median_ms("fwd_bwd") / off.median_ms("fwd_bwd")
        mem = (
            f", peak memory {peaks[on.name] / peaks[off.name]:.2f}x"
            if peaks[on.name] and peaks[off.name]
            else ""
        )
        print(f"{on.name.split(',')[0]}: guard on / off = {ratio:.3f}x time{mem}")


if __name__ == "__main__":
    main()
