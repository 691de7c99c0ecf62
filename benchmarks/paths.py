"""The implementations under test, built with the same weights: torch_port's chapter class and
bonus variants, and npattn's paths. Anything missing is skipped with the reason.

Shape legend: B batch, T tokens, d = d_in = d_out, H heads, E = d // H.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from timing import Path


@dataclass
class Size:
    B: int
    T: int
    d: int
    H: int


TORCH_VARIANTS = (  # (name in the tables, torch_port class, from_mha keyword arguments)
    ("Combined QKV", "MultiHeadAttentionCombinedQKV", {}),
    ("Einsum", "MHAEinsum", {}),
    ("SDPA", "MHAPyTorchScaledDotProduct", {}),
    ("SDPA without Flash", "MHAPyTorchSDPAWithoutFlash", {}),
    ("nn.MultiheadAttention", "MHAPyTorchClass", {"need_weights": True}),
    ("nn.MultiheadAttention, need_weights=False", "MHAPyTorchClass", {"need_weights": False}),
    ("FlexAttention", "MHAPyTorchFlexAttention", {}),
)
CH03 = "Ch03 MHA"
SDPA = "SDPA"
NPATTN_NAIVE = "npattn MHA (naive)"
NPATTN_TILED = "npattn MHA (tiled)"
NPATTN_UNFUSED = "npattn, before issue 6 (3 GEMMs + full sdpa op)"


def torch_mha(size: Size, device="cpu", dtype=None, seed: int = 123):
    """The chapter's MultiHeadAttention from torch_port, in eval mode (dropout 0)."""
    import torch

    import torch_port

    torch.manual_seed(seed)
    mha = torch_port.MultiHeadAttention(size.d, size.d, size.T, 0.0, size.H)
    return mha.to(device=device, dtype=dtype or torch.float32).eval()


def _torch_path(name, module, x, g, sync, grad_ok=True, note="") -> Path:
    """A Path whose closures call state["module"], so a compiled module can replace it."""
    import torch

    state = {"module": module}
    params = [p for p in module.parameters() if p.requires_grad]

    def fwd():
        if grad_ok:
            return state["module"](x)  # autograd records the graph, as in a training step
        with torch.no_grad():
            return state["module"](x)

    def fwd_bwd():
        x.grad = None
        for p in params:
            p.grad = None
        state["module"](x).backward(g)

    return Path(name, "torch", fwd, fwd_bwd if grad_ok else None, sync, note, state)


def torch_paths(size: Size, device="cpu", dtype=None, names=None, log=print) -> list[Path]:
    """Ch03 MHA, the wrapper and every bonus variant with the Ch03 weights (where they run).

    The input x and upstream gradient g are numpy_inputs(size), as for npattn's paths.
    """
    try:
        import torch

        import torch_port
        import torch_port.variants as variants
    except ImportError as e:
        log(f"  skipped every torch path: {e}")
        return []
    dtype = dtype or torch.float32
    x, g = (torch.from_numpy(a).to(device, dtype) for a in numpy_inputs(size))
    x.requires_grad_()
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    mha = torch_mha(size, device, dtype)
    paths = [_torch_path(CH03, mha, x, g, sync)]
    try:
        wrapper = torch_port.MultiHeadAttentionWrapper(
            size.d, size.d // size.H, size.T, 0.0, size.H
        )
        wrapper = wrapper.to(device=device, dtype=dtype).eval()
        paths.append(_torch_path("Wrapper", wrapper, x, g, sync, note="own random weights"))
    except (AttributeError, TypeError, RuntimeError) as e:
        log(f"  skipped Wrapper: {e}")
    for name, cls_name, kwargs in TORCH_VARIANTS:
        cls = getattr(variants, cls_name, None)
        if cls is None:
            log(f"  skipped {name}: torch_port.variants has no {cls_name}")
            continue
        try:
            module = cls.from_mha(mha, **kwargs).eval()
        except (RuntimeError, TypeError, ValueError, NotImplementedError) as e:
            log(f"  skipped {name}: {e}")
            continue
        grad_ok = not (cls_name == "MHAPyTorchFlexAttention" and not str(device).startswith("cuda"))
        note = "" if grad_ok else "forward only, under no_grad: no FlexAttention backward on CPU"
        paths.append(_torch_path(name, module, x, g, sync, grad_ok, note))
    return [p for p in paths if names is None or p.name in names]


def numpy_inputs(size: Size):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((size.B, size.T, size.d), dtype=np.float32)
    g = rng.standard_normal((size.B, size.T, size.d), dtype=np.float32)
    return x, g


def _module_path(name, module, x, g, note="") -> Path:
    def fwd_bwd():
        module(x)
        return module.backward(g)

    return Path(name, "npattn", lambda: module(x), fwd_bwd, note=note)


def npattn_paths(size: Size, state_dict=None, names=None, log=print) -> list[Path]:
    """npattn's MultiHeadAttention, naive and tiled, and the pre-issue-6 op chain for scale."""
    import npattn

    x, g = numpy_inputs(size)
    paths = []
    for name, impl in ((NPATTN_NAIVE, "naive"), (NPATTN_TILED, "tiled")):
        if names is not None and name not in names:
            continue
        try:
            m = npattn.MultiHeadAttention(size.d, size.d, size.T, 0.0, size.H, attn_impl=impl)
        except (TypeError, ValueError) as e:
            log(f"  skipped {name}: {e}")
            continue
        if state_dict is not None:
            m.load_state_dict(state_dict)
        paths.append(_module_path(name, m.eval(), x, g))
    if names is None or NPATTN_UNFUSED in names:
        paths.append(_unfused_path(size, state_dict, x, g))
    return paths


def _unfused_path(size: Size, state_dict, x, g) -> Path:
    """The op chain MultiHeadAttention ran before issue 6: three Linear GEMMs and the general
    sdpa op with a boolean (T, T) mask, kept here to show what the fast path gained."""
    from npattn import functional as F

    rng = np.random.default_rng(1)
    if state_dict is None:
        state_dict = {
            k: rng.uniform(-0.03, 0.03, (size.d, size.d)).astype(np.float32)
            for k in ("W_query.weight", "W_key.weight", "W_value.weight", "out_proj.weight")
        }
        state_dict["out_proj.bias"] = np.zeros(size.d, np.float32)
    w = {k: np.asarray(v, dtype=np.float32) for k, v in state_dict.items()}
    mask = F.causal_mask(size.T)  # (T, T), True = attend
    names = ("W_query", "W_key", "W_value")

    def forward():
        caches = []
        heads = []
        for n in names:
            y, c = F.linear_forward(x, w[f"{n}.weight"])  # (B, T, d)
            caches.append(c)
            heads.append(F.split_heads_forward(y, size.H)[0])  # (B, H, T, E)
        ctx, sc = F.sdpa_forward(*heads, attn_mask=mask)
        ctx, mc = F.merge_heads_forward(ctx)  # (B, T, d)
        out, oc = F.linear_forward(ctx, w["out_proj.weight"], w["out_proj.bias"])
        return out, (caches, sc, mc, oc)

    def fwd_bwd():
        _, (caches, sc, mc, oc) = forward()
        dctx = F.linear_backward(g, oc)[0]
        dheads = F.sdpa_backward(F.merge_heads_backward(dctx, mc), sc)
        shape_cache = ((size.B, size.T, size.d), size.H)  # split_heads_forward's cache
        dx = 0
        for dh, c in zip(dheads, caches):
            dx = dx + F.linear_backward(F.split_heads_backward(dh, shape_cache), c)[0]
        return dx

    return Path(NPATTN_UNFUSED, "npattn", lambda: forward()[0], fwd_bwd, note="op chain")
