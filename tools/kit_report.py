"""The testing kit's report card: every user-written layout in float64 and float32, every
planted bug, and the float32 error model's margins up to GPT-2 small size.

    python tools/kit_report.py            # about two minutes on one core
    python tools/kit_report.py --quick    # skips T = 1024

Margins: for each tensor, ratio = the module's normwise error against the float64 truth
divided by plain torch's at the same dtype. Correct modules must stay below FACTOR (minus
the floor's help); bugs must land orders of magnitude above.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from user_modules import NanoGPTAttention  # noqa: E402

import npattn  # noqa: E402
from torch_port import testing as tt  # noqa: E402

DTYPES = (torch.float64, torch.float32)


def layouts():
    import test_testing_kit_users as users  # the kinds and bugs the tests use

    glue = {  # lines a user writes besides the reference: map, forward adapter
        "nanoGPT sdpa": 1, "nanoGPT bias=False": 1, "nanoGPT explicit": 1, "minGPT": 1,
        "HF GPT-2 Conv1D": 2, "nn.MultiheadAttention": 3, "separate q/k/v": 1,
        "Llama GQA vs MHA": 2, "low-rank query": 11,
    }  # fmt: skip
    return users, glue


def run(module, reference, weight_map, forward, dtype, **kw):
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tt.assert_matches_reference(module, reference, weight_map, forward=forward,
                                        dtype=dtype, **kw)  # fmt: skip
            result = "pass"
        except tt.ReferenceMismatchError as e:
            m = e.mismatch
            result = f"caught: {m.quantity}, error/allowed = {m.error / m.allowed:.1e}"
    return result, time.perf_counter() - t


def table_layouts(users, glue):
    print("| module kind | glue lines | float64 | float32 | s/check f64 | s/check f32 |")
    print("|---|---|---|---|---|---|")
    for name, module, reference, weight_map, forward in users.kinds():
        cells = [run(module, reference, weight_map, forward, dt, max_examples=25) for dt in DTYPES]
        print(f"| {name} | {glue[name]} | {cells[0][0]} | {cells[1][0]} | "
              f"{cells[0][1]:.2f} | {cells[1][1]:.2f} |")  # fmt: skip


def table_bugs(users):
    print("\n| planted bug | float64 | float32 |")
    print("|---|---|---|")
    for bug, module, reference, weight_map, forward in users.bugs():
        cells = [run(module, reference, weight_map, forward, dt)[0] for dt in DTYPES]
        print(f"| {bug} | {cells[0]} | {cells[1]} |")


def margins_small(users, examples: int):
    """Per layout at the tests' size, over many random examples: the largest share of its
    bound a tensor used (error / allowed), and the largest error / plain-torch error where
    plain torch's error counts (FACTOR x plain >= FLOOR; below that the floor decides)."""
    floor = tt.FLOOR[torch.float32]
    print(f"\nfloat32, d=8, {examples} examples per layout: largest error/allowed; largest")
    print("error/plain where FACTOR x plain >= FLOOR (n = how many tensors that was)")
    print("| module kind | error/allowed | error/plain | n |")
    print("|---|---|---|---|")
    for name, module, reference, weight_map, forward in users.kinds():
        usage, ratio, n = 0.0, 0.0, 0
        for seed in range(examples):
            ex = tt.Example(1 + seed % 3, 1 + seed % 6, seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                js = tt.measure(module, reference, ex, weight_map, forward=forward,
                                dtype=torch.float32)  # fmt: skip
            for j in js:
                usage = max(usage, j.error / j.allowed)
                if j.plain_error and tt.FACTOR * j.plain_error >= floor:
                    ratio, n = max(ratio, j.ratio), n + 1
        print(f"| {name} | {usage:.2f} | {ratio:.2f} | {n} |")


def margins_large(tokens):
    """nanoGPT at GPT-2 small size (d=768, 12 heads), float32: correct and buggy."""
    print("\nfloat32, nanoGPT at d=768, 12 heads, B=1 (the first failing tensor ends a check)")
    print("| module | T | tensor | error | plain error | ratio | error/allowed | s |")
    print("|---|---|---|---|---|---|---|---|")
    torch.manual_seed(0)
    ref = npattn.MultiHeadAttention(768, 768, 1024, 0.0, 12, qkv_bias=True, rng=0)
    weight_map = tt.maps.fused_c_attn()
    for bug in (None, "no 1/sqrt(d_k)", "scale by model width", "detached keys"):
        for flash in (True, False) if bug is None else (False,):
            module = NanoGPTAttention(768, 12, 1024, flash=flash, bug=bug)
            label = bug or f"correct ({'SDPA' if flash else 'explicit'})"
            for T in tokens:
                t = time.perf_counter()
                js = tt.measure(module, ref, tt.Example(1, T, 0), weight_map, dtype=torch.float32)
                seconds = time.perf_counter() - t
                shown = [j for j in js if not j.passed] or [
                    js[0],
                    js[1],
                    max(js[2:], key=lambda j: j.error / j.allowed),
                ]
                for j in shown:
                    print(
                        f"| {label} | {T} | {j.quantity} | {j.error:.2e} | {j.plain_error:.2e} "
                        f"| {j.ratio:.3g} | {j.error / j.allowed:.3g} | {seconds:.1f} |"
                    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip T = 1024")
    args = parser.parse_args()
    torch.set_num_threads(1)
    users, glue = layouts()
    print(f"FACTOR = {tt.FACTOR}, FLOOR = { {str(k): f'{v:.2g}' for k, v in tt.FLOOR.items()} }\n")
    table_layouts(users, glue)
    table_bugs(users)
    margins_small(users, 60)
    margins_large((64, 256) if args.quick else (64, 256, 1024))


if __name__ == "__main__":
    main()
