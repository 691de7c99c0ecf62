"""npattn and torch_port side by side for the modern classes (and the cached
MultiHeadAttention): one module on each side holding the same arrays, and both sides'
output, dx (dx_kv) and parameter gradients for one input and one random upstream gradient.

Used by tests/test_agreement_modern.py and tools/modern_errors.py.
Shapes: x (B, T, d_in) [, x_kv (B, S, d_in)] -> (B, T, d_out or d_in); key_padding_mask (B, S).
"""

from __future__ import annotations

import numpy as np
import torch
from helpers import KeepMaskDropout, n, t, upstream
from strategies import modern_constructor_args

import npattn
import torch_port as tp

QWEN3 = "Qwen3Attention"
# Llama 3.1's frequency scaling with a short original context, so that within 8 positions
# the long wavelengths are divided, the short ones kept and one is blended (E = 2: 2 pi).
LLAMA31 = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_context_length=8)
ROPE_SETTINGS = {  # Qwen3Attention's settings: Qwen3 (the default), Llama 3, Llama 3.1
    "qwen3": {},
    "llama3": dict(qk_norm=False, rope_base=500_000.0),
    "llama3.1": dict(qk_norm=False, rope_base=500_000.0, rope_freq_config=LLAMA31),
}
TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def pair(name, cfg, dropout=0.0, dtype=np.float64, rope="qwen3", random_weights=True):
    """(npattn module, torch_port module) of class `name` for a modern_configs dict, with the
    same arrays: every parameter standard normal (seeded) if random_weights, else npattn's
    seeded init with Qwen3's RMSNorm scales made random (they start at ones)."""
    args, kwargs = modern_constructor_args(name, cfg, dropout)
    if name == QWEN3:
        settings = dict(ROPE_SETTINGS[rope])
        if "qk_norm" in settings:
            args = args[:4] + (settings.pop("qk_norm"),)
        kwargs.update(settings)
    ref = getattr(npattn, name)(*args, **kwargs, rng=cfg["seed"]).astype(dtype)
    tdtype = TORCH_DTYPES[np.dtype(dtype)]
    if name == "MultiHeadAttention":  # the chapter's class takes no dtype
        port = tp.MultiHeadAttention(*args).to(tdtype)
    else:
        port = getattr(tp, name)(*args, **kwargs, dtype=tdtype)
    rng = np.random.default_rng(cfg["seed"])
    state = ref.state_dict()
    for key in ref.parameters():
        if random_weights or key.endswith("norm.scale"):
            state[key] = rng.standard_normal(state[key].shape).astype(dtype)
    ref.load_state_dict(state)
    port.load_state_dict({k: t(v) for k, v in ref.state_dict().items()})
    return ref, port


def run_both(ref, port, x, seed, *, x_kv=None, key_padding_mask=None, same_dropout=False):
    """{quantity: (npattn, torch_port)} for out, dx [, dx_kv] and every parameter gradient,
    under the upstream gradient upstream(out.shape, seed). same_dropout: torch_port's dropout
    applies the keep-mask that npattn's forward drew (training mode)."""
    kw = {} if x_kv is None else {"x_kv": x_kv}
    y = ref(x, key_padding_mask=key_padding_mask, **kw)
    if same_dropout:
        port.dropout = KeepMaskDropout(ref.dropout_mask, port.dropout.p)
    g = upstream(y.shape, seed, y.dtype)
    dx = ref.backward(g)
    dxs = dx if isinstance(dx, tuple) else (dx,)

    tx = t(x, True)
    tkw = {} if x_kv is None else {"x_kv": t(x_kv, True)}
    tkpm = None if key_padding_mask is None else torch.from_numpy(key_padding_mask)
    port.zero_grad(set_to_none=True)
    ty = port(tx, key_padding_mask=tkpm, **tkw) if tkpm is not None or tkw else port(tx)
    ty.backward(t(g))
    tdxs = (tx.grad,) + tuple(v.grad for v in tkw.values())

    both = {"out": (y, n(ty))}
    for label, a, b in zip(("dx", "dx_kv"), dxs, tdxs):
        both[label] = (a, n(b))
    tgrads = {k: p.grad for k, p in port.named_parameters()}
    if set(ref.grads) != set(tgrads):
        raise AssertionError(f"parameter names differ: {sorted(ref.grads)} != {sorted(tgrads)}")
    for key, grad in ref.grads.items():
        tgrad = tgrads[key]  # None: a parameter torch's graph never reached
        both[key] = (grad, np.zeros_like(grad) if tgrad is None else n(tgrad))
    return both


def inputs(cfg, T=None, dtype=np.float64, seed_offset=0):
    """A standard normal (B, T, d_in) input, T = cfg["T"] by default."""
    rng = np.random.default_rng(cfg["seed"] + seed_offset)
    return rng.standard_normal((cfg["B"], T or cfg["T"], cfg["d_in"])).astype(dtype)
