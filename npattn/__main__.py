"""Command line: `python -m npattn demo | gradcheck | decode | exercises`."""

from __future__ import annotations

import argparse
import importlib.util
import sys

from ._cli import Parser, int_in, writable_dir

GRADCHECK_HELP = """\
Every op and every chapter class (gradient-check cases: npattn/gradcheck_cases.py) in float64,
its hand-written backward against central differences with a random upstream gradient.

Columns: max abs err = max |analytic - numeric|; max rel err = max abs err / max |numeric|
(floored at atol = 1e-5); ok = |analytic - numeric| <= atol + rtol |numeric| everywhere
(rtol = 1e-3, torch.autograd.gradcheck's tolerances). Errors near 1e-10 are the rounding
noise of the differences (step 1e-6 in float64).

Outliers marked *: a gradient that is exactly 0, where max rel err is noise over atol (about
1e-5) instead of a relative error. W_key.bias is the usual one: the key bias adds
query . b_key to every score of a query's row, the same constant across the row, and softmax
ignores a constant shift, so the loss does not depend on b_key at all.
"""


def gradcheck_report(seed: int = 0) -> bool:
    """Print the central-difference check of every op and module; True if all passed."""
    from .gradcheck import check_module, check_op
    from .gradcheck_cases import module_cases, op_cases
    from .gradcheck_modern import modern_module_cases, modern_op_cases

    print(GRADCHECK_HELP)
    ok = True
    for name, fwd, bwd, inputs, kwargs, wrt in op_cases(seed) + modern_op_cases(seed):
        report = check_op(fwd, bwd, inputs, kwargs, wrt=wrt, seed=seed)
        print(f"== {name}\n{report}\n")
        ok &= report.passed
    for name, module, x in module_cases(seed) + modern_module_cases(seed):
        report = check_module(module, x, seed=seed)
        print(f"== {name}\n{report}\n")
        ok &= report.passed
    print("all gradients agree with central differences" if ok else "SOME GRADIENTS DISAGREE")
    return ok


TORCH_HINT = "pip install -c constraints.txt -e '.[torch]' (from a clone of npattn)"


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: subcommands demo, gradcheck, decode and exercises, every
    option with help."""
    parser = Parser(
        prog="python -m npattn",
        description="npattn: LLM attention in NumPy, every backward by hand.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{demo,gradcheck,decode,exercises}"
    )
    demo = sub.add_parser("demo", help="walk through chapter 3, printing the chapter's numbers")
    demo.add_argument(
        "--plot",
        metavar="DIR",
        help="also write attention heatmaps to DIR (a directory, created if need be)",
    )
    demo.add_argument(
        "--weights",
        choices=("auto", "torch", "npattn"),
        default="auto",
        help="the chapter's torch-seeded weights (auto: when torch is installed) or npattn's",
    )
    gc = sub.add_parser(
        "gradcheck",
        help="central-difference check of every backward (float64)",
        description=GRADCHECK_HELP,
    )
    gc.add_argument(
        "--seed",
        type=int_in(0),
        default=0,
        help="seed of the inputs, the upstream gradient and the dropout masks",
    )
    from .beyond.decode import add_arguments

    add_arguments(
        sub.add_parser(
            "decode",
            help="decode one token at a time through each attention class, with and without "
            "the KV cache: tokens per second and cache bytes",
        )
    )
    from .exercises.cli import add_arguments as add_exercise_arguments

    add_exercise_arguments(
        sub.add_parser(
            "exercises",
            help="write each backward pass yourself: list, start, hint, check, solution",
        )
    )
    parser.subparsers = sub.choices  # name -> subparser, whose errors name the subcommand
    return parser


def check_demo_args(parser: Parser, args) -> None:
    """The demo's refusals that need more than the option's text: one line each, exit 2."""
    if args.weights == "torch" and importlib.util.find_spec("torch") is None:
        parser.refuse("--weights", f"torch is not installed: {TORCH_HINT}, or use npattn")
    if args.plot is not None:
        if importlib.util.find_spec("matplotlib") is None:
            parser.refuse("--plot", "needs matplotlib: pip install matplotlib")
        try:
            writable_dir(args.plot)
        except ValueError as e:
            parser.refuse("--plot", str(e))


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    subparser = parser.subparsers[args.command]
    if args.command == "gradcheck":
        return 0 if gradcheck_report(args.seed) else 1
    if args.command == "decode":
        from .beyond.decode import check_arguments
        from .beyond.decode import main as decode_main

        check_arguments(subparser, args)
        return decode_main(args)
    if args.command == "exercises":
        from .exercises.cli import main as exercises_main

        return exercises_main(args)
    from .chapter.demo import main as demo_main

    check_demo_args(subparser, args)
    return demo_main(plot_dir=args.plot, weights=args.weights)


if __name__ == "__main__":
    sys.exit(main())
