"""What the weight copies of a training step cost: MultiHeadAttention forward+backward with each
Linear's cache keeping a private copy of its weight (npattn's rule, npattn/_guard.py), against
the same step keeping the weight itself, marked read-only until the backward (the cheaper
scheme that would refuse an in-place edit instead of copying). Interleaved, one process.

    python benchmarks/weight_guard.py               # B=1, T=512, d=768, 12 heads, float32
    python benchmarks/weight_guard.py --size 4,512,768,12 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import types

from timing import pin_threads

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def readonly_weights_guard(guard):
    """_guard with private() keeping a Linear's weight itself, marked read-only, uncopied."""

    def private(a, *given):
        if a is not None and a.ndim == 2 and given and a is given[0]:  # the weight as given
            return guard.readonly(a)
        return guard.private(a, *given)

    return types.SimpleNamespace(private=private, readonly=guard.readonly)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", default="1,512,768,12", help="B,T,d,H")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    pin_threads(args.threads)  # before numpy loads its BLAS
    sys.path[:0] = [HERE, ROOT]
    from paths import Size, numpy_inputs
    from timing import Path, machine_note, run_interleaved

    import npattn
    from npattn import _guard
    from npattn.ops import linear as linear_op

    size = Size(*(int(n) for n in args.size.split(",")))
    x, g = numpy_inputs(size)
    m = npattn.MultiHeadAttention(size.d, size.d, size.T, 0.0, size.H, rng=0).eval()
    layers = (m.W_query, m.W_key, m.W_value, m.out_proj)
    readonly_guard = readonly_weights_guard(_guard)

    def step(read_only: bool):
        linear_op._guard = readonly_guard if read_only else _guard
        try:
            m(x)
            dx = m.backward(g)
        finally:
            linear_op._guard = _guard
            for layer in layers:  # the read-only scheme: writable again after the backward
                layer.weight.flags.writeable = True
        return dx

    paths = [
        Path(name, "npattn", None, lambda r=r: step(r))
        for name, r in (("copy weights", False), ("read-only weights", True))
    ]
    note = machine_note()
    print(
        f"MultiHeadAttention forward+backward, B={size.B} T={size.T} d={size.d} H={size.H}, "
        f"float32, {args.threads} thread(s), {args.repeats} interleaved repeats; "
        f"{note.get('cpu', '?')}"
    )
    run_interleaved(paths, args.repeats, args.warmup, log=lambda s: None)
    print(f"{'scheme':<20} {'median ms':>10} {'spread ms':>10}")
    for p in paths:
        print(f"{p.name:<20} {p.median_ms('fwd_bwd'):10.2f} {p.spread_ms('fwd_bwd') or 0:10.2f}")
    copy_ms, ro_ms = (p.median_ms("fwd_bwd") for p in paths)
    print(f"copy / read-only = {copy_ms / ro_ms:.3f}x ({copy_ms - ro_ms:+.2f} ms per step)")


if __name__ == "__main__":
    main()
