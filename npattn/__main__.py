"""Command line: `python -m npattn demo | gradcheck | decode`."""

from __future__ import annotations

import argparse
import sys


def gradcheck_report(seed: int = 0) -> bool:
    """Print the central-difference check of every op and module; True if all passed."""
    from .gradcheck import check_module, check_op
    from .gradcheck_modern import modern_module_cases, modern_op_cases
    from .stages import module_stages, op_stages

    ok = True
    for name, fwd, bwd, inputs, kwargs, wrt in op_stages(seed) + modern_op_cases(seed):
        report = check_op(fwd, bwd, inputs, kwargs, wrt=wrt, seed=seed)
        print(f"== {name}\n{report}\n")
        ok &= report.passed
    for name, module, x in module_stages(seed) + modern_module_cases(seed):
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
    from .decode import add_arguments

    add_arguments(
        sub.add_parser(
            "decode",
            help="decode one token at a time through each attention class, with and without "
            "the KV cache: tokens per second and cache bytes",
        )
    )
    args = parser.parse_args(argv)
    if args.command == "gradcheck":
        return 0 if gradcheck_report(args.seed) else 1
    if args.command == "decode":
        from .decode import main as decode_main

        return decode_main(args)
    from .demo import main as demo_main

    return demo_main(plot_dir=args.plot, weights=args.weights)


if __name__ == "__main__":
    sys.exit(main())
