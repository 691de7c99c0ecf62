"""Two CPU sections: the chapter's loops against matrix products, and scaling in T."""

from __future__ import annotations

import statistics
import time

import numpy as np
import paths as P
import report
from timing import peak_rss_bytes, return_freed_memory, run_interleaved

LOOP_TS = (6, 32, 128, 512)  # 6: the chapter's "Your journey starts with one step"
LOOP_D = 3  # the chapter's embedding width
SCALING_TS = (256, 512, 1024, 2048, 4096, 8192, 16384)
SCALING_REPEATS = {256: 7, 512: 7, 1024: 5, 2048: 3, 4096: 2, 8192: 1, 16384: 1}
SCALING_PATHS = (P.CH03, P.SDPA, P.NPATTN_REFERENCE, P.NPATTN_BLOCKED, P.NPATTN_TILED)
# resident (B, H, T, T) float32 arrays each path holds at its peak, for skipping runs that
# would not fit: torch's chapter class keeps scores, masked scores, weights and gradients;
# npattn's reference path its mask (bool), scores, weights and their gradients
TT_ARRAYS = {P.CH03: 6, P.SDPA: 0, P.NPATTN_REFERENCE: 4, P.NPATTN_BLOCKED: 2, P.NPATTN_TILED: 0}
FIT_FROM_T = 2048  # the "large T" exponent fits T >= this: attention, not the projections


def fit_exponent(points: dict) -> float | None:
    """p in cost ~ c * T^p, by least squares on log T, log cost; None under two points."""
    Ts = sorted(points)
    if len(Ts) < 2:
        return None
    slope, _ = np.polyfit(np.log(Ts), np.log([points[T] for T in Ts]), 1)
    return float(slope)


def exponents(results: dict, key: str, min_T: int = 0) -> dict:
    """{path: fitted exponent of results[path][T][key] over T >= min_T}."""
    return {
        name: fit_exponent(
            {T: r[key] for T, r in per_T.items() if T >= min_T and r.get(key) is not None}
        )
        for name, per_T in results.items()
    }


def per_call_s(fn, min_s: float = 0.2, rounds: int = 3) -> float:
    """Seconds per call: calls repeated until min_s has passed, median over rounds."""
    out = []
    for _ in range(rounds):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            if time.perf_counter() - t0 >= min_s:
                break
        out.append((time.perf_counter() - t0) / n)
    return statistics.median(out)


def loops(args, log) -> str:
    """F.attn_scores_loops / F.context_vectors_loops against x @ x.T and softmax(x @ x.T) @ x."""
    from npattn import functional as F

    Ts = [T for T in LOOP_TS if not args.quick or T <= 128]
    rows = []
    for T in Ts:
        log(f"loops: T={T}")
        x = np.random.default_rng(T).random((T, LOOP_D), dtype=np.float32)
        cases = (
            ("scores", lambda x=x: F.attn_scores_loops(x), lambda x=x: x @ x.T),
            (
                "context",
                lambda x=x: F.context_vectors_loops(x),
                lambda x=x: F.simple_self_attention(x)[0],
            ),
        )
        row = [str(T)]
        for _, slow, fast in cases:
            np.testing.assert_allclose(slow(), fast(), rtol=1e-4, atol=1e-5)
            t_slow, t_fast = per_call_s(slow, rounds=1 if T >= 512 else 3), per_call_s(fast)
            row += [f"{1e3 * t_slow:.3f}", f"{1e3 * t_fast:.4f}", f"{t_slow / t_fast:,.0f}x"]
        rows.append(row)
    header = ["T", "scores, loops (ms)", "scores, x @ x.T (ms)", "speedup"]
    header += ["context, loops (ms)", "context, matrices (ms)", "speedup"]
    return "\n".join(
        [
            "#### The chapter's loops against matrix products",
            "",
            f"Section 3.3 computes attention scores with a double loop of dot products and then "
            f"the context vectors with a loop of weighted sums; in matrix form they are "
            f"x @ x.T and softmax(x @ x.T) @ x. Inputs (T, {LOOP_D}) float32 (the chapter's "
            f"width), same results checked; medians of timed rounds.",
            "",
            report.table(rows, header),
        ]
    )


def scaling(args, size, log) -> tuple[str, dict]:
    """Forward+backward time and peak memory of five paths from T = 256 up, at batch 1."""
    max_T = args.max_T or (2048 if args.quick else SCALING_TS[-1])
    Ts = [T for T in SCALING_TS if T <= max_T]
    results = {name: {} for name in SCALING_PATHS}
    used = {}  # repeats per T
    return_freed_memory()
    for T in Ts:
        s = P.Size(1, T, size.d, size.H)
        paths, skipped = [], []
        for name in SCALING_PATHS:
            need = TT_ARRAYS[name] * s.B * s.H * T * T * 4
            if need > args.max_mem_gb * 2**30:
                skipped.append(name)
                results[name][T] = {"skip": f"skipped: needs ~{need / 2**30:.0f} GiB"}
        names = set(SCALING_PATHS) - set(skipped)
        paths = P.torch_paths(s, names=names, log=log) + P.npattn_paths(s, names=names, log=log)
        for p in paths:
            p.fwd = None  # forward+backward only
        repeats = SCALING_REPEATS.get(T, 1)
        repeats = min(repeats, args.repeats or repeats, 3 if args.quick else repeats)
        warmup = 1 if T <= 4096 else 0
        used[T] = repeats
        log(f"scaling: T={T}, {repeats} repeats, skipped {skipped or 'none'}")
        run_interleaved(paths, repeats, warmup, log=lambda _: None, settle_s=args.settle_s)
        for p in paths:
            results[p.name][T] = {"ms": p.median_ms("fwd_bwd"), "mem": peak_rss_bytes(p.fwd_bwd)}
    rows = []
    for T in Ts:
        row = [str(T)]
        for name in SCALING_PATHS:
            r = results[name].get(T, {})
            if "ms" in r:
                mem = "n/a" if r["mem"] is None else f"{r['mem'] / 2**20:,.0f}"
                row.append(f"{r['ms']:,.0f} ms, {mem} MiB")
            else:
                row.append(r.get("skip", "n/a"))
        rows.append(row)
    fits = []
    for label, min_T in (("all T", 0), (f"T >= {FIT_FROM_T}", FIT_FROM_T)):
        for key, what in (("ms", "time"), ("mem", "peak memory")):
            ex = exponents(results, key, min_T)
            fits.append(
                [f"{what}, {label}"]
                + [("n/a" if ex[n] is None else f"{ex[n]:.2f}") for n in SCALING_PATHS]
            )
    md = [
        f"#### Scaling in T: batch 1, d={size.d}, {size.H} heads",
        "",
        "Forward+backward time, median of interleaved repeats ("
        + ", ".join(f"{n} at T={T}" for T, n in used.items())
        + "; one warm-up run first, none from 8192), and the peak resident memory it added. "
        "The chapter's torch class and npattn's reference and blocked paths hold (B, H, T, T) "
        "arrays, so their memory grows with $T^2$; SDPA and npattn's tiled path "
        f"grow with T. Runs estimated above {args.max_mem_gb:g} GiB are skipped "
        "(--max-mem-gb).",
        "",
        report.table(rows, ["T", *SCALING_PATHS]),
        "",
        r"Fitted exponents $p$ of cost $\sim c\, T^p$ (least squares on log T, log cost, over the "
        "points measured): at small T the projections, linear in T, dominate the time, so the "
        f"fit over T >= {FIT_FROM_T} shows the attention's own growth.",
        "",
        report.table(fits, ["exponent", *SCALING_PATHS]),
    ]
    return "\n".join(md), results


def _one_blas_thread():
    """BLAS on one thread for the block (a no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def profile(args, size, log, runs: int = 3) -> str:
    """Where npattn's MultiHeadAttention(attn_impl="auto") spends a fwd+bwd: cProfile by op.

    numpy's ufuncs and BLAS calls do not appear on their own, so each op's own time
    ("tottime") is the matrix products and elementwise passes it runs.
    """
    import cProfile
    import pstats

    import npattn

    log("profile: npattn MultiHeadAttention, attn_impl='auto'")
    m = npattn.MultiHeadAttention(size.d, size.d, size.T, 0.0, size.H, rng=0, attn_impl="auto")
    m = m.eval()
    x, g = P.numpy_inputs(size)
    # cProfile sees only the calling thread: with BLAS on one thread, npattn runs its heads
    # there too, one after another, so every op's time is seen
    with _one_blas_thread():
        m(x)
        m.backward(g)  # warm-up
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(runs):
            m(x)
            m.backward(g)
        prof.disable()
    stats = pstats.Stats(prof).stats
    total = sum(v[2] for v in stats.values())
    rows = []
    for (fname, _, func), (_, ncalls, tottime, _, _) in stats.items():
        if "npattn" in fname and tottime / total >= 0.005:
            op = f"{fname.split('npattn/')[-1]}: {func}"
            rows.append((tottime, [op, f"{ncalls / runs:g}", f"{1e3 * tottime / runs:.1f}"]))
    rows.sort(key=lambda r: -r[0])
    share = [[*r, f"{100 * t / total:.0f}%"] for t, r in rows]
    return "\n".join(
        [
            f"#### Where npattn's time goes: B={size.B}, T={size.T}, d={size.d}, {size.H} heads",
            "",
            f"cProfile over {runs} forward+backward runs of npattn's MultiHeadAttention, "
            "attn_impl='auto' (one warm-up first), each op's own time per run (its matrix "
            "products and elementwise passes; numpy calls are not listed on their own). "
            "cProfile sees one thread only, so here everything runs on one thread (BLAS "
            "included): the shares, not the times, carry over to the table above.",
            "",
            report.table(share, ["op", "calls per run", "ms per run", "share"]),
        ]
    )
