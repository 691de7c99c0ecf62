"""The benchmark's sections: the header, main (all paths), loops vs matrices, scaling in T.

Each section prints as it goes and returns Markdown; `run` writes the files.
"""

from __future__ import annotations

import datetime
import os
import platform
import time

import numpy as np
import paths as P
import report
import sections_extra
from timing import Path, machine_note, peak_rss_bytes, return_freed_memory, run_interleaved

CPU_SIZE = "4,512,768,12"  # the targets: B, T, d_in = d_out, heads


def log(msg: str) -> None:
    print(msg, flush=True)


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed: BLAS kernel unknown"
    libs = [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '-')} kernel, "
        f"{i.get('num_threads')} threads)"
        for i in threadpool_info()
    ]
    return "; ".join(libs) or "none found"


def gemm_peak(repeats: int = 5, n: int = 2048) -> dict:
    """Measured float32 GEMM throughput of numpy and torch on (n, n) @ (n, n), GFLOP/s."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    gemms = [("numpy", lambda: a @ a)]
    torch = optional_torch()
    if torch is not None:
        ta = torch.from_numpy(a)
        gemms.append(("torch", lambda: ta @ ta))
    out = {}
    for name, fn in gemms:
        p = Path(name, name, None, fn)
        run_interleaved([p], repeats, 1, log=lambda _: None)
        out[name] = 2 * n**3 / (p.median_ms("fwd_bwd") / 1e3) / 1e9
    return out


def optional_torch():
    """torch, or None (then only npattn's paths run)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def header(args, openblas_env, command, size, peak) -> str:
    torch = optional_torch()
    m = machine_note()
    blas_env = ", ".join(f"{k}={v if v is not None else 'unset'}" for k, v in openblas_env.items())
    lines = [
        f"Command: `{command}`, {datetime.date.today().isoformat()}.",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores; load average at start {m['load']} "
        "(the machine may be shared: paths are interleaved and medians reported).",
        f"- Threads: {args.threads} (torch.set_num_threads, OMP/OPENBLAS/MKL_NUM_THREADS); "
        f"BLAS: {blas_info()}.",
        f"- {blas_env} when the benchmark ran (`make bench` unsets both: on some machines they "
        "select an older, slower OpenBLAS kernel; the tests keep them).",
        f"- numpy {np.__version__}, torch {torch.__version__ if torch else 'not installed'}, "
        f"Python {platform.python_version()}.",
        "- float32 GEMM peak measured here, (2048, 2048) @ (2048, 2048): "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items())
        + ".",
        f"- Main size: B={size.B}, T={size.T}, d_in=d_out={size.d}, {size.H} heads, dropout 0, "
        "eval mode; forward with autograd recording (npattn keeps its cache), forward+backward "
        "computes dL/dx and every parameter gradient for a random upstream gradient.",
    ]
    return "\n".join(lines)


def parse_size(text: str) -> P.Size:
    B, T, d, H = (int(v) for v in text.split(","))
    return P.Size(B, T, d, H)


def section_main(args, size, peak_best) -> tuple[str, list[Path]]:
    log(f"main: B={size.B} T={size.T} d={size.d} H={size.H}")
    names = None if not args.only else set(args.only.split(","))
    tpaths = P.torch_paths(size, names=names, log=log)
    ch03 = next((p for p in tpaths if p.name == P.CH03), None)
    state = None
    if ch03 is not None:
        state = {k: v.detach().numpy() for k, v in P.torch_mha(size).state_dict().items()}
    npaths = P.npattn_paths(size, state, names=names, log=log)
    paths = tpaths + npaths
    diffs = agreement(paths, ch03)
    repeats = args.repeats or (5 if args.quick else 15)
    run_interleaved(paths, repeats, args.warmup, log=log)
    return_freed_memory()
    for p in paths:
        kind = "fwd_bwd" if p.fwd_bwd is not None else "fwd"
        p.peak_bytes[kind] = peak_rss_bytes(getattr(p, kind))
    md = [
        f"## All paths, B={size.B}, T={size.T}, d={size.d}, {size.H} heads",
        "",
        f"Medians of {repeats} interleaved repeats after {args.warmup} warm-up runs, ± half "
        "the interquartile range. GFLOP/s counts the chapter's matrix products with the full "
        "(T, T) scores for every path (paths that skip the causal upper triangle do less real "
        "work); the share is of the better GEMM peak above. Peak memory: the process's peak "
        "resident set added during one forward+backward.",
        "",
        report.main_table(paths, P.CH03, size, peak_best, diffs),
    ]
    md += ["", targets(paths)]
    return "\n".join(md), paths


def agreement(paths, ref) -> dict:
    """Max |output - Ch03 output| of every path that has the Ch03 weights (not the wrapper)."""
    if ref is None:
        return {}
    import torch  # ref is a torch path, so torch is there

    with torch.no_grad():
        want = ref.fwd().detach().numpy()
    diffs = {}
    for p in paths:
        if p.name == "Wrapper":
            continue
        with torch.no_grad():
            out = p.fwd()
        out = out.detach().numpy() if hasattr(out, "detach") else out
        diffs[p.name] = float(np.abs(np.asarray(out, dtype=np.float64) - want).max())
    return diffs


def targets(paths) -> str:
    """Issue 6's two targets: npattn naive fwd+bwd <= 1.0x Ch03 MHA and <= 2.0x SDPA."""
    t = {p.name: p.median_ms("fwd_bwd") for p in paths}
    ours = t.get(P.NPATTN_NAIVE)
    lines = ["Targets (npattn's default MultiHeadAttention, forward+backward):", ""]
    for ref, limit in ((P.CH03, 1.0), (P.SDPA, 2.0)):
        if ours is None or t.get(ref) is None:
            lines.append(f"- vs {ref}: not measured")
            continue
        r = ours / t[ref]
        ok = "met" if r <= limit else "NOT met"
        lines.append(
            f"- {P.NPATTN_NAIVE} / {ref} = {ours:.1f} / {t[ref]:.1f} ms = **{r:.2f}x** "
            f"(target <= {limit:.1f}x: {ok})"
        )
    return "\n".join(lines)


def chart(draw, *args) -> None:
    """A PNG, or a printed reason where matplotlib is missing."""
    try:
        draw(*args)
    except ImportError as e:
        log(f"  skipped chart {args[-1]}: {e}")


def run(args, openblas_env, command) -> None:
    if args.device == "cuda":
        import cuda

        return cuda.run(args, command, log)
    import warnings

    torch = optional_torch()
    if torch is None:
        log("torch is not installed: only npattn's paths run")
    else:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile")
    os.makedirs(args.out, exist_ok=True)
    size = parse_size(args.size or CPU_SIZE)
    started = time.time()
    peak = gemm_peak()
    parts = ["# CPU benchmarks", "", header(args, openblas_env, command, size, peak)]
    sections = args.sections.split(",")
    if "main" in sections:
        md, paths = section_main(args, size, max(peak.values()))
        parts += ["", md]
        chart(
            report.bar_chart,
            paths,
            f"B={size.B}, T={size.T}, d={size.d}, {size.H} heads, float32, {args.threads} threads",
            os.path.join(args.out, "cpu.png"),
        )
    if "profile" in sections:
        parts += ["", sections_extra.profile(args, size, log)]
    if "loops" in sections:
        parts += ["", sections_extra.loops(args, log)]
    if "scaling" in sections:
        md, results = sections_extra.scaling(args, size, log)
        parts += ["", md]
        chart(
            report.scaling_chart,
            results,
            f"batch 1, d={size.d}, {size.H} heads, float32",
            os.path.join(args.out, "scaling.png"),
        )
    parts += [
        "",
        f"Total time {time.time() - started:.0f} s; load average at the end "
        f"{machine_note()['load']}.",
    ]
    out = os.path.join(args.out, "cpu.md")
    with open(out, "w") as f:
        f.write("\n".join(parts) + "\n")
    log(f"wrote {out}")
