"""Command line: `python -m npattn demo | gradcheck`."""

from __future__ import annotations

import argparse
import sys


def gradcheck_report(seed: int = 0) -> bool:
    """Print the central-difference check of every op and module; True if all passed."""
    from .gradcheck import check_module, check_op
    from .gradcheck_cases import module_cases, op_cases

    ok = True
    for name, fwd, bwd, inputs, kwargs, wrt in op_cases(seed):
        report = check_op(fwd, bwd, inputs, kwargs, wrt=wrt, seed=seed)
        print(f"== {name}\n{report}\n")
        ok &= report.passed
    for name, module, x in module_cases(seed):
        report = check_module(module, x, seed=seed)
        print(f"== {name}\n{report}\n")
        ok &= report.passed
    print("all gradients agree with central differences" if ok else "SOME GRADIENTS DISAGREE")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m npattn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="walk through chapter 3, printing the chapter's numbers")
    demo.add_argument("--plot", metavar="DIR", help="also write attention heatmaps to DIR")
    demo.add_argument(
        "--weights",
        choices=("auto", "torch", "npattn"),
        default="auto",
        help="the chapter's torch-seeded weights (auto: when torch is installed) or npattn's",
    )
    gc = sub.add_parser("gradcheck", help="central-difference check of every backward (float64)")
    gc.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "gradcheck":
        return 0 if gradcheck_report(args.seed) else 1
    from .chapter.demo import main as demo_main

    return demo_main(plot_dir=args.plot, weights=args.weights)


if __name__ == "__main__":
    sys.exit(main())
