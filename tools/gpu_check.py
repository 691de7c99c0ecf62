"""The GPU agreement check: runs tests/test_cuda.py and prints, for every case,
backend and dtype, the max errors against npattn's float64 reference and the tolerance used.

    PYTHONPATH=. python tools/gpu_check.py [--out FILE] [pytest args]   # ~1 min on one GPU

Errors are given for the output, dL/dx and all parameter gradients together: max abs, and
normwise (max abs error / max |reference|). --out also writes the table to FILE. On a machine
without CUDA it says so, and the tests skip.
"""

from __future__ import annotations

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUANTITIES = ("out", "dx", "grads")


def describe_device(torch) -> str:
    if not torch.cuda.is_available():
        return f"torch {torch.__version__}: no CUDA"
    matmul = torch.backends.cuda.matmul
    return (
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}; "
        f"tf32 matmul={matmul.allow_tf32}, reduced-precision reduction fp16="
        f"{matmul.allow_fp16_reduced_precision_reduction} "
        f"bf16={matmul.allow_bf16_reduced_precision_reduction}"
    )


def table(rows: list[dict]) -> list[str]:
    """One line per (case, dtype, backend): errors for out / dx / grads, tolerance, ok."""
    cases: dict[tuple, dict] = {}
    for r in rows:
        cases.setdefault((r["case"], r["dtype"], r["backend"]), {})[r["quantity"]] = r
    head = f"{'case':<30} {'dtype':<8} {'backend':<9} {'max abs: out / dx / grads':<28} "
    head += f"{'normwise: out / dx / grads':<28} {'tolerance':<24} ok"
    lines = [head, "-" * len(head)]
    for (case, dtype, backend), q in cases.items():
        present = [q[k] for k in QUANTITIES if k in q]
        abs_err = " / ".join(f"{r['max_abs']:.1e}" for r in present)
        norm_err = " / ".join(f"{r['normwise']:.1e}" for r in present)
        tols = sorted({r["tolerance"].split("*")[0] for r in present})  # elementwise: *scale
        ok = "yes" if all(r["ok"] for r in present) else "NO"
        lines.append(
            f"{case:<30} {dtype:<8} {backend:<9} {abs_err:<28} {norm_err:<28} "
            f"{', '.join(tols):<24} {ok}"
        )
    return lines


def main(argv: list[str]) -> int:
    out_file = None
    if "--out" in argv:
        i = argv.index("--out")
        out_file, argv = argv[i + 1], argv[:i] + argv[i + 2 :]
    sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
    import pytest
    import torch

    device = describe_device(torch)
    print(device, flush=True)
    start = time.perf_counter()
    test_file = os.path.join(ROOT, "tests", "test_cuda.py")
    code = int(pytest.main(["-q", "--tb=line", "-p", "no:cacheprovider", test_file, *argv]))
    elapsed = time.perf_counter() - start
    if not torch.cuda.is_available() and os.environ.get("NPATTN_TEST_DEVICE", "cuda") == "cuda":
        print("no CUDA: tests/test_cuda.py skipped, nothing measured")
        return code
    rows = getattr(sys.modules.get("test_cuda"), "RESULTS", [])
    bad = sum(not r["ok"] for r in rows)
    lines = [device, "", *table(rows), ""]
    lines.append(
        f"{len(rows)} measurements, {bad} outside tolerance; pytest exit code {code} "
        f"(a case that raised has no row: see FAILED above); {elapsed:.1f} s"
    )
    print("\n".join(lines[1:]))
    if out_file:
        with open(out_file, "w") as f:
            f.write("\n".join(lines) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
