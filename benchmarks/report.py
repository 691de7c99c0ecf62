"""Markdown tables and bar charts for the benchmark results."""

from __future__ import annotations

from timing import Path, mha_flops

GROUP_COLORS = {"npattn": "tab:orange", "modern": "tab:green"}  # bar colours; torch: blue


def _ms(v, spread=None) -> str:
    if v is None:
        return "n/a"
    text = f"{v:.1f}" if v >= 10 else f"{v:.2f}"
    return f"{text} ± {spread:.1f}" if spread is not None and v >= 10 else text


def _mib(b) -> str:
    return "n/a" if b is None else f"{b / 2**20:.0f}"


def table(rows: list[list[str]], header: list[str], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    marks = [":--" if a == "l" else "--:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main_table(paths: list[Path], ref: str, size, gemm_peak: float | None, diffs: dict) -> str:
    """Times, ratio to `ref`, GFLOP/s, share of the GEMM peak and peak memory, per path."""
    by_name = {p.name: p for p in paths}
    ref_p = by_name.get(ref)
    header = [
        "path",
        "forward (ms)",
        "fwd+bwd (ms)",
        f"forward / {ref}",
        f"fwd+bwd / {ref}",
        "fwd+bwd GFLOP/s",
        "share of GEMM peak",
        "peak mem fwd+bwd (MiB)",
        "max abs diff vs " + ref,
    ]
    rows = []
    for p in paths:
        f, fb = p.median_ms("fwd"), p.median_ms("fwd_bwd")
        ratios = []
        for kind, t in (("fwd", f), ("fwd_bwd", fb)):
            r = ref_p.median_ms(kind) if ref_p is not None else None
            ratios.append(f"{t / r:.2f}x" if t is not None and r else "n/a")
        gflops = share = "n/a"
        kind = "fwd_bwd" if fb is not None else "fwd"
        t = fb if fb is not None else f
        if t:
            rate = mha_flops(size.B, size.T, size.d, size.d, kind == "fwd_bwd") / (t / 1e3) / 1e9
            gflops = f"{rate:.0f}" + ("" if kind == "fwd_bwd" else " (fwd)")
            share = f"{100 * rate / gemm_peak:.0f}%" if gemm_peak else "n/a"
        mem = p.peak_bytes.get("fwd_bwd", p.peak_bytes.get("fwd"))
        name = f"{p.name} ({p.note})" if p.note else p.name
        diff = diffs.get(p.name)
        rows.append(
            [
                name,
                _ms(f, p.spread_ms("fwd")),
                _ms(fb, p.spread_ms("fwd_bwd")),
                *ratios,
                gflops,
                share,
                _mib(mem),
                "n/a" if diff is None else f"{diff:.1e}",
            ]
        )
    return table(rows, header)


def bar_chart(paths: list[Path], title: str, filename: str) -> None:
    """Forward and forward+backward medians side by side, like the bonus notebook's plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [p.name for p in paths]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.45 * len(paths) + 1.8), sharey=True)
    for ax, kind, label in zip(axes, ("fwd", "fwd_bwd"), ("forward", "forward + backward")):
        vals = [p.median_ms(kind) or 0.0 for p in paths]
        colors = [GROUP_COLORS.get(p.group, "tab:blue") for p in paths]
        bars = ax.barh(names, vals, color=colors)
        for bar, v in zip(bars, vals):
            ax.text(
                bar.get_width(),
                bar.get_y() + bar.get_height() / 2,
                f" {v:.0f}" if v else " n/a",
                va="center",
                fontsize=8,
            )
        ax.set_xlabel(f"{label} (ms, median)")
        ax.margins(x=0.15)
    axes[0].invert_yaxis()  # the first path on top (the y axis is shared: invert it once)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(filename, dpi=110)
    plt.close(fig)


def scaling_chart(results: dict, title: str, filename: str) -> None:
    """Time and peak memory against T, log-log: T^2 paths climb twice as steeply."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, per_T in results.items():
        Ts = sorted(T for T, r in per_T.items() if r.get("ms") is not None)
        if Ts:
            ax_t.plot(Ts, [per_T[T]["ms"] for T in Ts], marker="o", label=name)
        Tm = sorted(T for T, r in per_T.items() if r.get("mem") is not None)
        if Tm:
            ax_m.plot(Tm, [per_T[T]["mem"] / 2**20 for T in Tm], marker="o", label=name)
    for ax, ylabel in ((ax_t, "forward + backward (ms)"), (ax_m, "peak memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("T (tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(filename, dpi=110)
    plt.close(fig)
