"""Benchmarks: the chapter's MultiHeadAttention, the bonus notebook's variants and npattn.

    python benchmarks/bench.py                   # CPU: every section, bench-results/cpu.md
    python benchmarks/bench.py --write-docs      # the same into the site: docs/benchmarks/
    python benchmarks/bench.py --quick           # the same, smaller and fewer repeats
    python benchmarks/bench.py --device cuda     # torch variants on a GPU: gpu.md there

Sections (CPU): `main` times forward and forward+backward of every path, interleaved in one
process; `profile` shows where npattn's time goes; `loops` the chapter's Python loops against
matrix products; `scaling` time and memory against T at batch 1. Threads are pinned
(--threads) for numpy's BLAS and torch before either is imported. `make bench` runs it with
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (they select an older, slower OpenBLAS kernel on
some machines; the output header says what was set).
"""

from __future__ import annotations

import argparse
import os
import sys

from timing import pin_threads

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def resolve_out(args):
    """--out, or docs/benchmarks/ with --write-docs, or bench-results/ (git-ignored)."""
    if args.out is None:
        parts = ("docs", "benchmarks") if args.write_docs else ("bench-results",)
        args.out = os.path.join(ROOT, *parts)
    return args


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads (all)")
    p.add_argument("--repeats", type=int, help="timed rounds (default 15, quick 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs of each path first")
    p.add_argument("--settle-s", type=float, default=0.3, help="pause before each timed run")
    p.add_argument("--size", help="B,T,d,H (CPU 4,512,768,12; CUDA 8,1024,768,12)")
    p.add_argument("--sections", default="main,profile,loops,scaling", help="CPU sections")
    p.add_argument("--only", help="comma-separated path names to run (main section)")
    p.add_argument("--max-T", type=int, help="largest T of the scaling table (8192, quick 2048)")
    p.add_argument("--max-mem-gb", type=float, default=6.0, help="skip runs estimated above it")
    p.add_argument("--budget-s", type=float, help="CUDA: start no compile past it (300, quick 90)")
    p.add_argument("--no-compile", action="store_true", help="CUDA: eager only")
    p.add_argument(
        "--out",
        help="where the tables and plots go (default: bench-results/, or with --write-docs "
        "docs/benchmarks/)",
    )
    p.add_argument(
        "--write-docs",
        action="store_true",
        help="write the site's pages (docs/benchmarks/cpu.md, gpu.md), not bench-results/",
    )
    return resolve_out(p.parse_args(argv))


def main(argv=None) -> None:
    args = parse_args(argv)
    openblas_env = {v: os.environ.get(v) for v in OPENBLAS_VARS}
    pin_threads(args.threads)
    sys.path[:0] = [HERE, ROOT]  # the sibling modules, then this checkout's npattn/torch_port
    import sections  # imports numpy: after the thread variables are set

    sections.run(args, openblas_env, " ".join(["python", "benchmarks/bench.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
