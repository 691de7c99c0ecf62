"""Measured max errors on the CPU, for the record: every variant's from_mha against
MultiHeadAttention in float32, torch_port against the book's code and against npattn in
float64, and npattn -> torch -> npattn round trips, over N random configurations.

    PYTHONPATH=.:tests python tools/agreement_errors.py [N]     # N = 200 by default
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import torch

import torch_port as tp

NAMES = tp.convert.CHAPTER_CLASSES
VARIANTS = {
    "MultiHeadAttentionCombinedQKV": (tp.MultiHeadAttentionCombinedQKV, {}),
    "MHAEinsum": (tp.MHAEinsum, {}),
    "MHAPyTorchScaledDotProduct": (tp.MHAPyTorchScaledDotProduct, {}),
    "MHAPyTorchSDPAWithoutFlash": (tp.MHAPyTorchSDPAWithoutFlash, {}),
    "MHAPyTorchClass(need_weights=True)": (tp.MHAPyTorchClass, {"need_weights": True}),
    "MHAPyTorchClass(need_weights=False)": (tp.MHAPyTorchClass, {"need_weights": False}),
    "MHAPyTorchFlexAttention (forward)": (tp.MHAPyTorchFlexAttention, {}),
}


def config(rng):
    h = int(rng.integers(1, 4))
    d_out = h * int(rng.integers(1, 5))
    cl = int(rng.integers(1, 7))
    return dict(
        d_in=int(rng.integers(1, 7)), d_out=d_out, num_heads=h, context_length=cl,
        T=int(rng.integers(1, cl + 1)), B=int(rng.integers(1, 4)), qkv_bias=bool(rng.integers(2)),
    )  # fmt: skip


def args(name, c):
    d_in, d_out, cl, h, b = (
        c[k] for k in ("d_in", "d_out", "context_length", "num_heads", "qkv_bias")
    )
    return {
        "SelfAttention_v1": (d_in, d_out),
        "SelfAttention_v2": (d_in, d_out, b),
        "CausalAttention": (d_in, d_out, cl, 0.0, b),
        "MultiHeadAttentionWrapper": (d_in, d_out // h, cl, 0.0, h, b),
        "MultiHeadAttention": (d_in, d_out, cl, 0.0, h, b),
    }[name]  # fmt: skip


def run(module, x, g, to_mha=None):
    module.zero_grad()
    x = x.clone().requires_grad_(True)
    y = module(x)
    y.backward(g)
    grads = {k: p.grad for k, p in module.named_parameters() if p.grad is not None}
    return y.detach(), x.grad, (to_mha(grads) if to_mha else grads)


def max_err(a, b) -> float:
    return max(float((a[i] - b[i]).abs().max()) for i in range(2)) if a else 0.0


def grads_err(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in b)


def main(n: int) -> None:
    import chapter_ch03 as ch

    rng = np.random.default_rng(0)
    worst: dict[str, float] = {}

    def note(key, value):
        worst[key] = max(worst.get(key, 0.0), value)

    for _ in range(n):
        c = config(rng)
        shape = (c["B"], c["T"])
        seed = int(rng.integers(2**31))
        torch.manual_seed(seed)
        mha = tp.MultiHeadAttention(*args("MultiHeadAttention", c))
        x = torch.randn(*shape, c["d_in"])
        g = torch.randn(*shape, c["d_out"])
        base = run(mha, x, g)
        for label, (cls, kw) in VARIANTS.items():
            if cls is tp.MHAPyTorchClass and c["d_in"] != c["d_out"]:
                continue
            v = cls.from_mha(mha, **kw)
            if cls is tp.MHAPyTorchFlexAttention:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    note(f"variant f32 {label}", float((v(x) - mha(x)).abs().max()))
                continue
            out = run(v, x, g, v.to_mha_layout)
            note(f"variant f32 {label}", max(max_err(out, base), grads_err(out[2], base[2])))
        for name in NAMES:
            a = args(name, c)
            torch.manual_seed(seed)
            book = getattr(ch, name)(*a).double()
            torch.manual_seed(seed)
            port = getattr(tp, name)(*a).double()
            xs = x.double()[0] if name.startswith("SelfAttention") else x.double()
            d = port(xs).shape[-1]
            gs = torch.randn(*xs.shape[:-1], d, dtype=torch.float64)
            rb, rp = run(book, xs, gs), run(port, xs, gs)
            note(f"port vs book f64 {name}", max(max_err(rp, rb), grads_err(rp[2], rb[2])))
            ref = tp.to_npattn(port)
            y = ref(xs.numpy())
            dx = ref.backward(gs.numpy())
            e = max(np.abs(y - rp[0].numpy()).max(), np.abs(dx - rp[1].numpy()).max())
            e = max([e] + [np.abs(ref.grads[k] - rp[2][k].numpy()).max() for k in ref.grads])
            note(f"npattn vs port f64 {name}", float(e))
            back = tp.to_npattn(tp.from_npattn(ref))
            trip = [np.abs(back.state_dict()[k] - v).max() for k, v in ref.state_dict().items()]
            note(f"round trip npattn->torch->npattn {name}", float(max(trip)))
    print(f"max abs errors over {n} random configurations (forward, dx, parameter grads)")
    for key, value in worst.items():
        print(f"  {key:<58} {value:.2e}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
