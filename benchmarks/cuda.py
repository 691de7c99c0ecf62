"""The GPU section: every torch variant in float32 and bfloat16, eager and torch.compile'd.

The variants: the chapter's class, the bonus notebook's variants and torch_port's modern
classes (modern_paths.py), all timed interleaved in one run. Sized to fit a few minutes: eager
runs are quick; compiling costs tens of seconds a module, so compiled runs go in priority order
(the chapter's and the notebook's first, the modern classes last) and stop once --budget-s
has passed.
"""

from __future__ import annotations

import os
import time

import modern_paths as M
import paths as P
import report
from timing import run_interleaved

# the book's bonus notebook's A100 table: B=8, T=1024, d=768, 12 heads, fp32
A100 = {
    "Wrapper": (4.79, 12.07),
    P.CH03: (3.15, 9.0),
    "Combined QKV": (3.88, 9.73),
    "Einsum": (4.24, 10.13),
    P.SDPA: (1.15, 3.85),
    "SDPA without Flash": (1.82, 6.02),
    "nn.MultiheadAttention": (3.19, 8.08),
    "nn.MultiheadAttention, need_weights=False": (2.26, 7.5),
    "FlexAttention": (14.02, 23.73),
}
ALIGN = "ll" + "r" * 6  # variant and family left, numbers right
CUDA_SIZE = "8,1024,768,12"  # B, T, d, H: the bonus notebook's A100 table
COMPILE_ORDER = (
    *(P.CH03, P.SDPA, "FlexAttention", "Combined QKV", "Einsum", "SDPA without Flash"),
    *M.MODERN_NAMES,
)


def _peak_mib(path, device) -> float | None:
    import torch

    if not str(device).startswith("cuda") or path.fwd_bwd is None:
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    path.fwd_bwd()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def measure(size, device, dtype, compiled, repeats, warmup, names=None, log=print):
    """Paths timed interleaved; with `compiled`, each module is torch.compile'd first."""
    import torch

    paths = []
    if names is None or not set(names) <= set(M.MODERN_NAMES):
        paths += P.torch_paths(size, device=device, dtype=dtype, names=names, log=log)
    paths += M.modern_paths(size, device=device, dtype=dtype, names=names, log=log)
    compile_s = {}
    if compiled:
        for p in paths:
            t0 = time.time()
            try:
                p.state["module"] = torch.compile(p.state["module"])
                p.fwd_bwd() if p.fwd_bwd is not None else p.fwd()  # compiles here
                p.sync()
            except Exception as e:  # noqa: BLE001 - report any compiler failure, go on
                log(f"  compile failed for {p.name}: {type(e).__name__}: {str(e)[:200]}")
                p.fwd = p.fwd_bwd = None
            compile_s[p.name] = time.time() - t0
    # no settle pause on the GPU: no spinning CPU threads to wait out, and device time counts
    run_interleaved([p for p in paths if p.fwd or p.fwd_bwd], repeats, warmup, log=log, settle_s=0)
    mem = {p.name: _peak_mib(p, device) for p in paths}
    return paths, compile_s, mem


def run(args, command, log, device="cuda") -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        log("no CUDA device: the GPU section needs one (torch.cuda.is_available() is False)")
        raise SystemExit(2)
    started = time.time()
    B, T, d, H = (int(v) for v in (args.size or CUDA_SIZE).split(","))
    size = P.Size(B, T, d, H)
    repeats = args.repeats or (10 if args.quick else 30)
    budget_s = args.budget_s or (90.0 if args.quick else 300.0)
    dtypes = (("float32", torch.float32), ("bfloat16", torch.bfloat16))
    fp32_paths, results = [], {}
    for dname, dtype in dtypes:
        log(f"eager {dname}")
        paths, _, mem = measure(size, device, dtype, False, repeats, args.warmup, log=log)
        results[("eager", dname)] = (paths, {}, mem)
        fp32_paths = paths if dname == "float32" else fp32_paths
    if not args.no_compile:
        for name in COMPILE_ORDER:
            for dname, dtype in dtypes:
                if time.time() - started > budget_s:
                    log(f"  budget reached: {name} {dname} not compiled")
                    continue
                log(f"compiled {name} {dname}")
                paths, cs, mem = measure(
                    size, device, dtype, True, repeats, args.warmup, names={name}, log=log
                )
                prev = results.setdefault(("compiled", dname), ([], {}, {}))
                prev[0].extend(paths)
                prev[1].update(cs)
                prev[2].update(mem)
    rows_eager, rows_comp = table_rows(results)
    write(args, command, size, repeats, rows_eager, rows_comp, fp32_paths, device, started)


def family(path) -> str:
    """The table's "family" column: the chapter's class, the notebook's variants, or modern."""
    if path.group == M.MODERN_GROUP:
        return "modern"
    return "chapter" if path.name == P.CH03 else "bonus"


def table_rows(results: dict) -> tuple[list, list]:
    """Rows of the eager and compiled tables from {(mode, dtype name): (paths, compile s, mem)}.

    Each row's ratio is to the chapter's class timed in the same run (same mode and dtype).
    """
    rows_eager, rows_comp = [], []
    for (mode, dname), (paths, cs, mem) in results.items():
        target = rows_eager if mode == "eager" else rows_comp
        ref = next((p for p in paths if p.name == P.CH03), None)
        ref_fb = ref.median_ms("fwd_bwd") if ref is not None else None
        for p in paths:
            f, fb = p.median_ms("fwd"), p.median_ms("fwd_bwd")
            ratio = f"{fb / ref_fb:.2f}x" if fb and ref_fb else "n/a"
            name = f"{p.name} ({p.note})" if p.note else p.name
            row = [name, family(p), dname, _fmt(f), _fmt(fb), ratio, _fmt(mem.get(p.name), 0)]
            if mode == "eager":
                a = A100.get(p.name) if dname == "float32" else None
                row.append("n/a" if a is None else f"{a[0]} / {a[1]}")
            else:
                row.append(f"{cs.get(p.name, 0):.0f}")
            target.append(row)
    return rows_eager, rows_comp


def _fmt(v, digits=2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def write(args, command, size, repeats, rows_eager, rows_comp, fp32_paths, device, started):
    import torch

    name = torch.cuda.get_device_name() if device == "cuda" else device
    os.makedirs(args.out, exist_ok=True)
    head = ["variant", "family", "dtype", "forward (ms)", "fwd+bwd (ms)", "fwd+bwd / Ch03 MHA"]
    md = [
        "### GPU benchmarks",
        "",
        f"Command: `{command}`. Device: {name}; torch {torch.__version__}, CUDA "
        f"{torch.version.cuda}. B={size.B}, T={size.T}, d={size.d}, {size.H} heads, dropout 0, "
        f"eval mode, TF32 {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}. Medians "
        f"of {repeats} interleaved repeats after {args.warmup} warm-up runs; peak memory is "
        "torch.cuda.max_memory_allocated above the memory in use before one forward+backward.",
        "",
        "Family: `chapter` is the chapter's MultiHeadAttention, `bonus` the bonus notebook's "
        "variants (the chapter's weights, except the Wrapper's), `modern` torch_port's modern "
        "classes with their own random weights and the settings named in the row; every ratio "
        "is to the chapter's class in the same table and dtype.",
        "",
        "#### Eager",
        "",
        report.table(
            rows_eager, head + ["peak mem (MiB)", "A100 fp32 (ms), bonus notebook"], ALIGN
        ),
        "",
        "#### torch.compile (default mode)",
        "",
        "Compiled in priority order until the time budget ran out; compile time is the first "
        "forward+backward.",
        "",
        report.table(rows_comp, head + ["peak mem (MiB)", "compile (s)"], ALIGN)
        if rows_comp
        else "Not run (--no-compile or no time left).",
        "",
        f"Total time {time.time() - started:.0f} s.",
    ]
    out = os.path.join(args.out, "gpu.md")
    with open(out, "w") as f:
        f.write("\n".join(md) + "\n")
    try:
        report.bar_chart(
            fp32_paths,
            f"{name}, float32 eager, B={size.B}, T={size.T}",
            os.path.join(args.out, "gpu.png"),
        )
    except ImportError as e:
        print(f"  skipped chart gpu.png: {e}", flush=True)
    print(f"wrote {out}", flush=True)
