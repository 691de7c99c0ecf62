"""Measured float64 errors of the modern stages against plain torch autograd (the reference
code of tests/modern_torch.py), over N random configurations: max over configurations of
max|npattn - torch| / max|torch|, per module (or op) and quantity (a module's parameter
gradients taken together). Modules run with random dropout, key padding and windows.

    PYTHONPATH=.:tests python tools/modern_errors.py [N]     # N = 100 by default
"""

from __future__ import annotations

import sys
from collections import defaultdict

import modern_torch as R
import numpy as np
import torch

import npattn
from npattn import functional as F


def rel(a, b):
    b = b.detach().numpy() if torch.is_tensor(b) else np.asarray(b)
    return float(np.abs(np.asarray(a) - b).max() / max(np.abs(b).max(), 1e-300))


def module_case(name, rng):
    H = int(rng.integers(1, 5))
    G = int(rng.choice([g for g in range(1, H + 1) if H % g == 0]))
    E, T, B, d_in = (int(rng.integers(1, 4)), int(rng.integers(1, 7)), int(rng.integers(1, 3)),
                     int(rng.integers(1, 7)))  # fmt: skip
    bias, p, seed = bool(rng.integers(2)), float(rng.choice([0.0, 0.3])), int(rng.integers(1e6))
    window = None
    if name == "GroupedQueryAttention":
        m = npattn.GroupedQueryAttention(d_in, H * E, p, H, G, bias, rng=seed)
    elif name == "MultiHeadLatentAttention":
        latent = int(rng.integers(1, 6))
        m = npattn.MultiHeadLatentAttention(d_in, H * E, p, H, bias, latent, rng=seed)
    elif name == "MultiHeadAttentionWithSWA":
        window = int(rng.integers(1, T + 2))
        m = npattn.MultiHeadAttentionWithSWA(d_in, H * E, p, H, bias, window, rng=seed)
    else:
        E *= 2
        m = npattn.Qwen3Attention(d_in, H, G, E, bool(rng.integers(2)), context_length=T, rng=seed)
    m.load_state_dict({k: rng.standard_normal(v.shape) for k, v in m.state_dict().items()})
    x = rng.standard_normal((B, T, d_in))
    lengths = rng.integers(0, T + 1, B) if rng.integers(2) else None
    kpm = None if lengths is None else np.arange(T)[None, :] < lengths[:, None]
    y = m(x, key_padding_mask=kpm)
    P, tx = R.params(m.state_dict()), torch.tensor(x, requires_grad=True)
    mask = R.causal_window_mask(T, T, window, lengths)
    keep, pp = m.dropout_mask, (p if keep_needed(m) else 0.0)
    if name == "GroupedQueryAttention":
        ref = R.gqa(P, tx, H, G, mask, keep, pp)
    elif name == "MultiHeadLatentAttention":
        ref = R.mla(P, tx, H, mask, keep, pp)
    elif name == "MultiHeadAttentionWithSWA":
        ref = R.swa(P, tx, H, mask, keep, pp)
    else:
        ref = R.qwen3(P, tx, H, G, mask, *R.rope_params(E, 1_000_000.0, T))
    g = rng.standard_normal(y.shape)
    ref.backward(torch.tensor(g))
    dx = m.backward(g)
    out = {"out": rel(y, ref), "dx": rel(dx, tx.grad)}
    # all parameter gradients together (normwise): a key bias's true gradient is 0 (softmax
    # is shift invariant), so on its own its relative error would be rounding over rounding
    diff = max(float(np.abs(m.grads[k] - P[k].grad.numpy()).max()) for k in P)
    out["param grads"] = diff / max(max(float(P[k].grad.abs().max()) for k in P), 1e-300)
    return out


def keep_needed(m):
    return m.dropout_mask is not None


def op_cases(rng):
    B, H, L, S, E = 2, int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.integers(1, 6)), 4
    q, k, v = (
        rng.standard_normal((B, H, L, E)),
        rng.standard_normal((B, H, S, E)),
        rng.standard_normal((B, H, S, 3)),
    )
    mask = rng.random((L, S)) > 0.3
    g = rng.standard_normal((B, H, L, 3))
    res = {}
    for name, kw in (
        ("sdpa softcap", {"softcap": 2.0}),
        ("sdpa sinks", {"sinks": rng.standard_normal(H)}),
    ):
        out, cache = F.sdpa_forward(q, k, v, mask, **kw)
        grads = F.sdpa_backward(g, cache)
        t = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
        tkw = dict(kw)
        if "sinks" in kw:
            tkw["sinks"] = torch.tensor(kw["sinks"], requires_grad=True)
        ref = R.attention(*t, mask, **tkw)
        ref.backward(torch.tensor(g))
        res[name] = {"out": rel(out, ref)}
        for i, d in enumerate(("dq", "dk", "dv")):
            res[name][d] = rel(grads[i], t[i].grad)
        if "sinks" in kw:
            res[name]["dsinks"] = rel(grads[3], tkw["sinks"].grad)
    cos, sin = F.compute_rope_params(E, context_length=L + 3)
    for name, interleaved in (("rope halves", False), ("rope interleaved", True)):
        out, cache = F.rope_forward(q, cos, sin, 3, interleaved=interleaved)
        gq = rng.standard_normal(q.shape)
        tq = torch.tensor(q, requires_grad=True)
        c, s = torch.tensor(cos[3 : 3 + L]), torch.tensor(sin[3 : 3 + L])
        ref = (R.rope_interleaved if interleaved else R.rope)(tq, c, s)
        ref.backward(torch.tensor(gq))
        res[name] = {"out": rel(out, ref), "dx": rel(F.rope_backward(gq, cache), tq.grad)}
    scale = rng.standard_normal(E)
    out, cache = F.rmsnorm_forward(q, scale)
    dx, dscale = F.rmsnorm_backward(q[..., ::-1], cache)
    tq, ts = torch.tensor(q, requires_grad=True), torch.tensor(scale, requires_grad=True)
    ref = R.rmsnorm(tq, ts)
    ref.backward(torch.tensor(q[..., ::-1].copy()))
    res["rmsnorm"] = {"out": rel(out, ref), "dx": rel(dx, tq.grad), "dscale": rel(dscale, ts.grad)}
    return res


def main(n: int = 100) -> None:
    rng = np.random.default_rng(0)
    worst = defaultdict(lambda: defaultdict(float))
    names = ("GroupedQueryAttention", "MultiHeadLatentAttention", "MultiHeadAttentionWithSWA",
             "Qwen3Attention")  # fmt: skip
    for _ in range(n):
        for name in names:
            for q, e in module_case(name, rng).items():
                worst[name][q] = max(worst[name][q], e)
        for name, errs in op_cases(rng).items():
            for q, e in errs.items():
                worst[name][q] = max(worst[name][q], e)
    print(f"float64, npattn vs torch autograd, max over {n} random configurations")
    print(f"{'module / op':<28} {'quantity':<12} {'max rel err':>12}")
    for name, errs in worst.items():
        for q, e in errs.items():
            print(f"{name:<28} {q:<12} {e:12.2e}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
