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
NPATTN_REFERENCE = "npattn MHA (reference)"
NPATTN_BLOCKED = "npattn MHA (blocked)"
NPATTN_TILED = "npattn MHA (tiled)"
NPATTN_AUTO = "npattn MHA (auto)"
NPATTN_IMPLS = (  # (name in the tables, attn_impl)
    (NPATTN_REFERENCE, "reference"),
    (NPATTN_BLOCKED, "blocked"),
    (NPATTN_TILED, "tiled"),
    (NPATTN_AUTO, "auto"),
)


def torch_mha(size: Size, device="cpu", dtype=None, seed: int = 123):
    """The chapter's MultiHeadAttention from torch_port, in eval mode (dropout 0)."""
    import torch

    import torch_port

    torch.manual_seed(seed)
    mha = torch_port.MultiHeadAttention(size.d, size.d, size.T, 0.0, size.H)
    return mha.to(device=device, dtype=dtype or torch.float32).eval()


def _torch_path(name, module, x, g, sync, grad_ok=True, note="") -> Path:
    """A Path whose closures call state["module"], so a compiled module can replace it.

    state["x"] is the input, whose .grad the forward+backward fills.
    """
    import torch

    state = {"module": module, "x": x}
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


def torch_inputs(size: Size, device, dtype) -> tuple:
    """(x, g, sync): numpy_inputs(size) as torch tensors on `device` in `dtype`, x recording
    its gradient, and the device's synchronize (a no-op on the CPU)."""
    import torch

    x, g = (torch.from_numpy(a).to(device, dtype) for a in numpy_inputs(size))
    x.requires_grad_()
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    return x, g, sync


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
    x, g, sync = torch_inputs(size, device, dtype)
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
    """npattn's MultiHeadAttention with each attn_impl: reference, blocked, tiled and auto."""
    import npattn

    x, g = numpy_inputs(size)
    paths = []
    for name, impl in NPATTN_IMPLS:
        if names is not None and name not in names:
            continue
        try:
            m = npattn.MultiHeadAttention(size.d, size.d, size.T, 0.0, size.H, attn_impl=impl)
        except (TypeError, ValueError) as e:
            log(f"  skipped {name}: {e}")
            continue
        if state_dict is not None:
            m.load_state_dict(state_dict)
        note = ""
        if impl == "auto":
            from npattn.fast.dispatch import choose_attn_impl

            note = f"runs {choose_attn_impl(size.T, size.B * size.H)}"
        paths.append(_module_path(name, m.eval(), x, g, note=note))
    return paths


PROJ_TORCH = "projections only (torch)"
PROJ_NPATTN = "projections only (npattn)"


def projection_paths(size: Size) -> list[Path]:
    """The four projections' forward+backward alone, as torch and as npattn's fast path run them.

    W_query, W_key and W_value as one (3 d, d) product of x, out_proj on a (B, T, d) context,
    then both backwards for random upstream gradients: the same products, FLOPs and gradients
    as in the MHA paths (dx, dW and db), without the attention steps in between. Subtracted
    from a path's time, they leave its attention steps (split and merge included).
    """
    import npattn.functional as F

    rng = np.random.default_rng(1)
    B, T, d = size.B, size.T, size.d
    x, ctx, g = (rng.standard_normal((B, T, d), dtype=np.float32) for _ in range(3))
    dqkv = rng.standard_normal((B, T, 3 * d), dtype=np.float32)
    w_qkv = [rng.standard_normal((d, d), dtype=np.float32) for _ in range(3)]
    w_out, b_out = rng.standard_normal((d, d), dtype=np.float32), np.zeros(d, np.float32)

    def npattn_fwd_bwd():
        _, qkv_cache = F.fused_linear_forward(x, w_qkv)
        _, out_cache = F.fused_linear_forward(ctx, [w_out], [b_out])
        F.fused_linear_backward(g, out_cache)
        return F.fused_linear_backward(dqkv, qkv_cache)

    paths = [Path(PROJ_NPATTN, "projections", None, npattn_fwd_bwd)]
    try:
        import torch
    except ImportError:
        return paths
    tx, tctx, tg, tdqkv = (torch.from_numpy(a) for a in (x, ctx, g, dqkv))
    tw_qkv = torch.from_numpy(np.concatenate(w_qkv))
    tw_out, tb_out = torch.from_numpy(w_out), torch.from_numpy(b_out)
    leaves = [tx, tctx, tw_qkv, tw_out, tb_out]
    for t in leaves:
        t.requires_grad_()

    def torch_fwd_bwd():
        for t in leaves:
            t.grad = None
        qkv = torch.nn.functional.linear(tx, tw_qkv)
        out = torch.nn.functional.linear(tctx, tw_out, tb_out)
        torch.autograd.backward([out, qkv], [tg, tdqkv])

    paths.append(Path(PROJ_TORCH, "projections", None, torch_fwd_bwd))
    return paths
