"""npattn.Attention with every attention option on: attn_impl "reference" against "tiled",
time and peak memory against T; and "auto" beside torch's SDPA and the chapter's class.

    python benchmarks/attention.py                       # both sections
    python benchmarks/attention.py --section scaling --Ts 1024,2048,4096,8192
    python benchmarks/attention.py --section sdpa --repeats 7

scaling: d = 768, 12 heads sharing 4 key/value heads, RoPE, QK-norm, a window of 512,
soft-cap 50 and sinks, B = 1, float32, forward+backward for a random upstream gradient. At a
fixed window the tiled path's time and memory grow linearly in T (tiles outside the window
are skipped, nothing (T, T) is formed); the reference's grow as T^2.
sdpa: the chapter's size (B = 4, T = 512, d = 768, 12 heads, float32), forward+backward:
Attention (auto) configured as the chapter's MultiHeadAttention (no options), the chapter's
class (auto), and torch_port's MHAPyTorchScaledDotProduct (torch SDPA), side by side.
Times are medians of interleaved repeats (benchmarks/timing.py); prints Markdown tables and
writes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys

from timing import pin_threads

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
D, HEADS, GROUPS, WINDOW, SOFTCAP = 768, 12, 4, 512, 50.0


def every_option(impl: str):
    import numpy as np

    import npattn

    cfg = npattn.AttentionConfig(
        hidden_size=D, num_heads=HEADS, num_kv_heads=GROUPS, rope=npattn.RoPE(),
        qk_norm=npattn.QKNorm(), window=WINDOW, softcap=SOFTCAP, sinks=True,
    )  # fmt: skip
    return npattn.Attention(cfg, rng=0, attn_impl=impl).astype(np.float32).eval()


def scaling(args) -> None:
    import numpy as np
    from timing import fwd_bwd_path, time_and_peak_rows

    rows = []
    for T in (int(t) for t in args.Ts.split(",")):
        rng = np.random.default_rng(T)
        x, g = (rng.standard_normal((1, T, D), dtype=np.float32) for _ in "xg")
        paths = [
            fwd_bwd_path(f"Attention ({impl})", every_option(impl), x, g)
            for impl in ("reference", "tiled")
            # the reference forms (1, 12, T, T) weights, scores and gradients: T^2 memory
            if impl == "tiled" or T <= args.max_reference_T
        ]
        rows += time_and_peak_rows(T, paths, args.repeats, args.settle_s)
    print(f"Every option on: d = {D}, {HEADS} heads, {GROUPS} key/value heads, RoPE, QK-norm,")
    print(f"window {WINDOW}, soft-cap {SOFTCAP}, sinks; B = 1, float32, forward+backward;")
    print(f"{args.threads} threads, medians of {args.repeats} interleaved repeats")
    print("| T | attn_impl | fwd+bwd (ms) | peak memory (MiB) |")
    print("|---:|:--|---:|---:|")
    print("\n".join(rows))


def sdpa(args) -> None:
    import numpy as np
    import torch
    from timing import Path, fwd_bwd_path, run_interleaved

    import npattn
    import torch_port

    B, T = 4, 512
    rng = np.random.default_rng(0)
    x, g = (rng.standard_normal((B, T, D), dtype=np.float32) for _ in "xg")
    tx, tg = torch.from_numpy(x.copy()).requires_grad_(), torch.from_numpy(g.copy())
    chapter = npattn.MultiHeadAttention(D, D, T, 0.0, HEADS, rng=0, attn_impl="auto")
    cfg = npattn.AttentionConfig(hidden_size=D, num_heads=HEADS, qkv_bias=False, out_bias=True)
    attention = npattn.Attention(cfg, rng=0, attn_impl="auto")
    tmha = torch_port.MultiHeadAttention(D, D, T, 0.0, HEADS)
    sdpa_module = torch_port.MHAPyTorchScaledDotProduct.from_mha(tmha).eval()

    def torch_fwd_bwd():
        sdpa_module.zero_grad(set_to_none=True)
        tx.grad = None
        sdpa_module(tx).backward(tg)

    paths = [
        fwd_bwd_path("npattn.Attention (auto)", attention, x, g),
        fwd_bwd_path("npattn.MultiHeadAttention (auto)", chapter, x, g),
        Path("torch SDPA (MHAPyTorchScaledDotProduct)", "torch", None, torch_fwd_bwd),
    ]
    run_interleaved(paths, args.repeats, 1, log=lambda _: None, settle_s=args.settle_s)
    base = paths[-1].median_ms("fwd_bwd")
    print(f"B = {B}, T = {T}, d = {D}, {HEADS} heads, float32, forward+backward; ")
    print(f"{args.threads} threads, medians of {args.repeats} interleaved repeats")
    print("| path | fwd+bwd (ms) | / torch SDPA |")
    print("|:--|---:|---:|")
    for p in paths:
        ms = p.median_ms("fwd_bwd")
        print(f"| {p.name} | {ms:,.0f} | {ms / base:.2f}x |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--section", choices=("scaling", "sdpa", "all"), default="all")
    p.add_argument("--Ts", default="1024,2048,4096", help="comma-separated sequence lengths")
    p.add_argument("--max-reference-T", type=int, default=4096, help="largest T for reference")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--settle-s", type=float, default=0.3, help="pause before each timed run")
    args = p.parse_args(argv)
    pin_threads(args.threads)  # before numpy loads its BLAS
    sys.path[:0] = [HERE, ROOT]
    from timing import machine_note

    print(f"CPU: {machine_note().get('cpu', 'unknown')}")
    if args.section in ("scaling", "all"):
        scaling(args)
    if args.section in ("sdpa", "all"):
        sdpa(args)


if __name__ == "__main__":
    main()
