"""Measured float64 errors of the modern stages, max over N random configurations of the
normwise relative error max|npattn - other| / max|other| and of the absolute error
max|npattn - other|, per module (or op) and quantity.

- against torch_port (tests/modern_pairs.py: the same arrays on both sides): each modern
  class's output, dx (dx_kv), the gradient of each child's parameters (weight and bias
  together), and the outputs of cached decoding in random chunks; RoPE (both layouts) and
  RMSNorm against torch_port's. Random key padding (rows with no key included), dropout with
  the same keep-mask on both sides, windows, groups, latent sizes.
- against torch autograd on plain torch code (tests/modern_torch.py): the same modules with
  their parameter gradients taken together, and the SDPA options (soft-capping, sinks with
  dsinks, the sliding-window mask with GQA and L != S), RoPE and RMSNorm.

The two columns are maxima over the configurations, taken separately. A relative error well
above 1e-15 with a tiny absolute one is a gradient that is a small difference of large terms:
with near-uniform attention (one input feature, a latent of 1) dscores is ~1e-5 of its terms.

    PYTHONPATH=.:tests python tools/modern_errors.py [N]     # N = 100 by default
    make modern-errors
"""

from __future__ import annotations

import sys
from collections import defaultdict

import modern_pairs as P
import modern_torch as R
import numpy as np
import torch

import npattn
import torch_port as tp
from npattn import functional as F


def rel(a, b):
    """(max|a - b| / max|b|, max|a - b|): normwise relative and absolute error."""
    b = b.detach().numpy() if torch.is_tensor(b) else np.asarray(b)
    diff = float(np.abs(np.asarray(a) - b).max(initial=0.0))
    return diff / max(float(np.abs(b).max(initial=0.0)), 1e-300), diff


def random_config(rng):
    """A plain-rng counterpart of tests/strategies.modern_configs (same keys and ranges)."""
    G = int(rng.integers(1, 4))
    ints = {k: int(rng.integers(lo, hi + 1)) for k, lo, hi in
            (("B", 1, 2), ("T", 1, 6), ("d_in", 1, 5), ("E", 1, 3), ("C", 1, 4))}  # fmt: skip
    return dict(
        ints, G=G, H=G * int(rng.integers(1, 3)), context_length=8, seed=int(rng.integers(2**16)),
        W=None if rng.integers(3) == 0 else int(rng.integers(1, 8)), bias=bool(rng.integers(2)),
        rope_base=float(rng.choice([10.0, 10_000.0, 1_000_000.0])),
    )  # fmt: skip


def grouped(both):
    """{quantity: rel(...)} with each child's parameter gradients taken together (normwise):
    a key bias's true gradient is 0 (softmax is shift invariant), so on its own its relative
    error would be rounding over rounding."""
    groups = defaultdict(list)
    for key, (a, b) in both.items():
        groups[key if "." not in key else "grad " + key.split(".")[0]].append((a, b))
    return {
        q: rel(
            np.concatenate([np.ravel(a) for a, _ in ab]),
            np.concatenate([np.ravel(b) for _, b in ab]),
        )
        for q, ab in groups.items()
    }


def port_cases(rng):
    """{row: {quantity: rel err}} of npattn against torch_port for one random configuration."""
    cfg = random_config(rng)
    B, T = cfg["B"], cfg["T"]
    rows = {}
    for name in tp.convert.MODERN_CLASSES:
        settings = ("qwen3", "llama3", "llama3.1") if name == P.QWEN3 else ("qwen3",)
        for rope in settings:
            label = name + {"qwen3": "", "llama3": ", Llama 3", "llama3.1": ", Llama 3.1"}[rope]
            p = 0.0 if name == P.QWEN3 or rng.integers(2) else float(rng.choice([0.1, 0.5]))
            ref, port = P.pair(name, cfg, dropout=p, rope=rope)
            if p == 0.0:
                ref.eval(), port.eval()
            kpm = rng.random((B, T)) < 0.7 if rng.integers(2) else None
            x = P.inputs(cfg)
            rows[label] = grouped(
                P.run_both(ref, port, x, cfg["seed"], key_padding_mask=kpm, same_dropout=p > 0)
            )
            rows[label]["cached out"] = cached_error(ref.eval(), port.eval(), x, rng)
    ref, port = P.pair("GroupedQueryAttention", cfg)
    S = int(rng.integers(1, 7))
    kpm = rng.random((B, S)) < 0.7 if rng.integers(2) else None
    x_kv = P.inputs(cfg, T=S, seed_offset=1)
    both = P.run_both(ref.eval(), port.eval(), P.inputs(cfg), cfg["seed"], x_kv=x_kv,
                      key_padding_mask=kpm)  # fmt: skip
    rows["GroupedQueryAttention, x_kv"] = grouped(both)
    rows.update(port_op_cases(rng))
    return rows


def cached_error(ref, port, x, rng):
    """Max rel error of the outputs of decoding x in random chunks on both sides."""
    ref.reset_cache(), port.reset_cache()
    cuts = sorted(set(rng.integers(1, x.shape[1], size=2).tolist())) if x.shape[1] > 1 else []
    edges = [0, *cuts, x.shape[1]]
    ys = [(ref(x[:, a:b], use_cache=True), port(torch.tensor(x[:, a:b]), use_cache=True))
          for a, b in zip(edges, edges[1:])]  # fmt: skip
    return rel(np.concatenate([a for a, _ in ys], 1), torch.cat([b for _, b in ys], 1))


def port_op_cases(rng):
    """RoPE (both layouts; interleaved = split halves permuted) and RMSNorm, torch_port's."""
    E, T, offset = 2 * int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.integers(0, 4))
    freq = P.LLAMA31 if rng.integers(2) else None
    cos, sin = F.compute_rope_params(E, 500_000.0, 8, freq)
    tcos, tsin = tp.rope.compute_rope_params(E, 500_000.0, 8, freq)
    rows = {"rope tables": {"cos": rel(cos, tcos), "sin": rel(sin, tsin)}}
    x, g = rng.standard_normal((2, 3, T, E)), rng.standard_normal((2, 3, T, E))
    c, s = tcos[offset : offset + T], tsin[offset : offset + T]
    perm = np.concatenate([np.arange(0, E, 2), np.arange(1, E, 2)])  # interleaved -> halves
    for name, interleaved in (("rope halves", False), ("rope interleaved", True)):
        out, cache = F.rope_forward(x, cos, sin, offset, interleaved=interleaved)
        tx = torch.tensor(x, requires_grad=True)
        if interleaved:
            ty = tp.rope.apply_rope(tx[..., perm], c, s)[..., np.argsort(perm)]
        else:
            ty = tp.rope.apply_rope(tx, c, s)
        ty.backward(torch.tensor(g))
        rows[name] = {"out": rel(out, ty), "dx": rel(F.rope_backward(g, cache), tx.grad)}
    ref, port = npattn.RMSNorm(E, dtype=np.float64), tp.RMSNorm(E, dtype=torch.float64)
    scale = rng.standard_normal(E)
    ref.load_state_dict({"scale": scale}), port.load_state_dict({"scale": torch.tensor(scale)})
    tx = torch.tensor(x, requires_grad=True)
    y, ty = ref(x), port(tx)
    ty.backward(torch.tensor(g))
    rows["RMSNorm"] = {"out": rel(y, ty), "dx": rel(ref.backward(g), tx.grad),
                       "dscale": rel(ref.grads["scale"], port.scale.grad)}  # fmt: skip
    return rows


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
    out["param grads"] = (
        diff / max(max(float(P[k].grad.abs().max()) for k in P), 1e-300),
        diff,
    )
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
    window = int(rng.integers(1, 6))
    qg, mask = rng.standard_normal((B, 2 * H, L, E)), F.sliding_window_mask(L, S, window=window)
    out, cache = F.sdpa_forward(qg, k, v, mask, enable_gqa=True)
    t = [torch.tensor(a, requires_grad=True) for a in (qg, k, v)]
    ref = R.attention(t[0], t[1].repeat_interleave(2, 1), t[2].repeat_interleave(2, 1), mask)
    ref.backward(torch.tensor(np.concatenate([g, g], axis=1)))
    grads = F.sdpa_backward(np.concatenate([g, g], axis=1), cache)
    res["sdpa window, GQA"] = {"out": rel(out, ref)}
    for i, d in enumerate(("dq", "dk", "dv")):
        res["sdpa window, GQA"][d] = rel(grads[i], t[i].grad)
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
    worst = defaultdict(lambda: defaultdict(lambda: (0.0, 0.0)))  # (row, against) -> q -> max

    def note(rows, against):
        for row, errs in rows.items():
            for q, e in errs.items():
                worst[row, against][q] = np.maximum(worst[row, against][q], e)

    names = ("GroupedQueryAttention", "MultiHeadLatentAttention", "MultiHeadAttentionWithSWA",
             "Qwen3Attention")  # fmt: skip
    for _ in range(n):
        note(port_cases(rng), "torch_port")
        note({name: module_case(name, rng) for name in names}, "torch code")
        note(op_cases(rng), "torch code")
    print(f"float64, npattn vs other, max over {n} random configurations of the normwise")
    print(
        "relative error max|npattn - other| / max|other| and the absolute error max|npattn - other|"
    )
    print(f"{'module / op':<30} {'quantity':<14} {'against':<11} {'rel err':>9} {'abs err':>9}")
    for (row, against), errs in worst.items():
        for q, (r, d) in errs.items():
            print(f"{row:<30} {q:<14} {against:<11} {r:9.2e} {d:9.2e}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
