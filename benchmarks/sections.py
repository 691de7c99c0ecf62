"""The benchmark's sections: the header, main (all paths), loops vs matrices, scaling in T.

Each section prints as it goes and returns Markdown; `run` writes the files.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time

import numpy as np
import paths as P
import report
import sections_extra
from timing import (
    Path,
    machine_note,
    peak_rss_bytes,
    return_freed_memory,
    run_interleaved,
)

CPU_SIZE = "4,512,768,12"  # B, T, d_in = d_out, heads: GPT-2 small's width, T = 512


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


GEMM_N = 2048  # the peak is measured on (GEMM_N, GEMM_N) @ (GEMM_N, GEMM_N) float32


def gemm_paths() -> list[Path]:
    """numpy's and torch's float32 GEMM, timed like the other paths (forward slot unused)."""
    a = np.random.default_rng(0).standard_normal((GEMM_N, GEMM_N), dtype=np.float32)
    gemms = [Path("GEMM numpy", "gemm", None, lambda: a @ a)]
    torch = optional_torch()
    if torch is not None:
        ta = torch.from_numpy(a)
        gemms.append(Path("GEMM torch", "gemm", None, lambda: ta @ ta))
    return gemms


def gemm_peak(gemms: list[Path]) -> dict:
    """GFLOP/s of the best repeat of each GEMM: the machine's float32 peak as we can see it."""
    return {p.name.split()[-1]: 2 * GEMM_N**3 / min(p.times["fwd_bwd"]) / 1e9 for p in gemms}


def optional_torch():
    """torch, or None (then only npattn's paths run)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def header(args, openblas_env, command, size, peak, started_load) -> str:
    torch = optional_torch()
    m = machine_note()
    blas_env = ", ".join(f"{k}={v if v is not None else 'unset'}" for k, v in openblas_env.items())
    lines = [
        f"Command: `{command}`, {datetime.date.today().isoformat()}.",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores; load average at the start {started_load} "
        "(the machine may be shared: paths are interleaved and medians reported).",
        f"- Threads: {args.threads} (torch.set_num_threads, OMP/OPENBLAS/MKL_NUM_THREADS); "
        f"BLAS: {blas_info()}.",
        f"- {blas_env} when the benchmark ran (`make bench` unsets both: on some machines they "
        "select an older, slower OpenBLAS kernel; the tests keep them).",
        f"- numpy {np.__version__}, torch {torch.__version__ if torch else 'not installed'}, "
        f"Python {platform.python_version()}.",
        f"- float32 GEMM peak measured here, best repeat of ({GEMM_N}, {GEMM_N}) @ ({GEMM_N}, "
        f"{GEMM_N}) timed among the paths: "
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


def section_main(args, size) -> tuple[str, list[Path], dict]:
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
    gemms = gemm_paths()
    projections = P.projection_paths(size) if names is None or P.NPATTN_AUTO in names else []
    timed = paths + gemms + projections
    run_interleaved(timed, repeats, args.warmup, log=log, settle_s=args.settle_s)
    peak = gemm_peak(gemms)
    return_freed_memory()
    for p in paths:
        kind = "fwd_bwd" if p.fwd_bwd is not None else "fwd"
        p.peak_bytes[kind] = peak_rss_bytes(getattr(p, kind))
    md = [
        f"#### All paths, B={size.B}, T={size.T}, d={size.d}, {size.H} heads",
        "",
        f"Medians of {repeats} interleaved repeats after {args.warmup} warm-up runs, ± half "
        f"the interquartile range; each timed run starts after a {args.settle_s} s pause, so that "
        "the previous path's idle BLAS or OpenMP threads have stopped spinning. GFLOP/s "
        "counts the chapter's matrix products with the full "
        "(T, T) scores for every path (paths that skip the causal upper triangle do less real "
        "work); the share is of the better GEMM peak in the header. Peak memory: the process's "
        "peak resident set added during one forward+backward.",
        "",
        report.main_table(paths, P.CH03, size, max(peak.values()), diffs),
    ]
    md += ["", speed_goal(paths, size, peak.get("numpy"))]
    if projections:
        md += ["", time_split(paths, projections)]
    return "\n".join(md), paths, peak


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


def causal_flops(size, backward: bool = True) -> float:
    """FLOPs of MultiHeadAttention's matrix products with the causal half of the (T, T) scores:
    the work a path that skips the upper triangle must do (the backward costs two forwards)."""
    B, T, d = size.B, size.T, size.d
    fwd = 8 * B * T * d * d + 2 * B * T * T * d  # projections + out_proj, q k^T and weights @ v
    return 3 * fwd if backward else fwd


BOUNDS = ((P.CH03, 1.0), (P.SDPA, 1.0))  # npattn's speed goal on the CPU, forward+backward


def speed_goal(paths, size, numpy_gemm: float | None) -> str:
    """attn_impl="auto" fwd+bwd against the chapter's torch class and torch's SDPA, and its
    share of the GEMM roofline."""
    t = {p.name: p for p in paths}
    ours = t.get(P.NPATTN_AUTO)
    lines = ['npattn\'s MultiHeadAttention(attn_impl="auto"), forward+backward:', ""]
    for ref, limit in BOUNDS:
        if ours is None or t.get(ref) is None:
            lines.append(f"- vs {ref}: not measured")
            continue
        # the median of the per-repeat ratios: both ran within the same repeat
        r = statistics.median(a / b for a, b in zip(ours.times["fwd_bwd"], t[ref].times["fwd_bwd"]))
        ok = "within" if r <= limit else "NOT within"
        lines.append(
            f"- {P.NPATTN_AUTO} / {ref}: median of per-repeat ratios **{r:.2f}x** "
            f"(medians {ours.median_ms('fwd_bwd'):.1f} / {t[ref].median_ms('fwd_bwd'):.1f} ms; "
            f"{ok} the goal of {limit:.1f}x)"
        )
    if ours is not None and numpy_gemm:
        best = min(ours.times["fwd_bwd"])
        flops = causal_flops(size)
        lines.append(
            f"- GEMM roofline: {flops / 1e9:.1f} GFLOP (causal half of the scores) in the best "
            f"repeat, {best * 1e3:.0f} ms, at numpy's measured {numpy_gemm:.0f} GFLOP/s: "
            f"**{100 * flops / (best * numpy_gemm * 1e9):.0f}%** of the roofline "
            f"({100 * flops / (ours.median_ms('fwd_bwd') / 1e3 * numpy_gemm * 1e9):.0f}% at the "
            "median)"
        )
    return "\n".join(lines)


def time_split(paths, projections) -> str:
    """Each path's time split into its four projections and the attention steps between them.

    The projections were timed alone in the same repeats (paths.projection_paths); a path's
    attention steps are its median less its library's projections' median.
    """
    t = {p.name: p.median_ms("fwd_bwd") for p in paths + projections}
    proj = {P.SDPA: t.get(P.PROJ_TORCH), P.NPATTN_AUTO: t.get(P.PROJ_NPATTN)}
    lines = [
        "Where the time goes, forward+backward (medians of the same repeats): the four "
        "projections alone (one (3d, d) product for W_query, W_key, W_value and out_proj, "
        "forward and backward, as each library runs them), and the rest, the attention steps "
        "between them (split, scores, softmax, weights @ values, merge, and their backward).",
        "",
        "| path | total (ms) | projections (ms) | attention steps (ms) |",
        "| :-- | --: | --: | --: |",
    ]
    for name, p_ms in proj.items():
        if t.get(name) is None or p_ms is None:
            continue
        lines.append(f"| {name} | {t[name]:.1f} | {p_ms:.1f} | {t[name] - p_ms:.1f} |")
    ours, sdpa, ours_proj = t.get(P.NPATTN_AUTO), t.get(P.SDPA), proj[P.NPATTN_AUTO]
    if None not in (ours, sdpa, ours_proj):
        room = sdpa - ours_proj
        lines += [
            "",
            f"To match SDPA's {sdpa:.1f} ms, npattn's attention steps would have to take "
            f"{room:.1f} ms, {room / (ours - ours_proj):.2f}x their time here.",
        ]
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
    parts, peak, load0 = [], {}, machine_note()["load"]
    sections = args.sections.split(",")
    if "main" in sections:
        md, paths, peak = section_main(args, size)
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
    head = header(args, openblas_env, command, size, peak, load0)
    parts = ["### CPU benchmarks", "", head, *parts]
    parts += [
        "",
        f"Total time {time.time() - started:.0f} s; load average at the end "
        f"{machine_note()['load']}.",
    ]
    out = os.path.join(args.out, "cpu.md")
    with open(out, "w") as f:
        f.write("\n".join(parts) + "\n")
    log(f"wrote {out}")
