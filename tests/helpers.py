"""Helpers for comparing npattn with torch: conversion, autograd, assertions."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")


def t(a, requires_grad: bool = False):
    """A torch tensor sharing nothing with the numpy array a."""
    return torch.tensor(np.array(a), requires_grad=requires_grad)


def n(x):
    """A numpy array from a tensor."""
    return x.detach().cpu().numpy()


def assert_close(actual, expected, rtol: float, atol: float, name: str = "") -> None:
    """torch.testing.assert_close on numpy / torch inputs, with a named quantity."""
    actual = torch.as_tensor(np.asarray(actual)) if not torch.is_tensor(actual) else actual
    expected = torch.as_tensor(np.asarray(expected)) if not torch.is_tensor(expected) else expected
    torch.testing.assert_close(
        actual.detach(),
        expected.detach(),
        rtol=rtol,
        atol=atol,
        check_dtype=False,
        msg=lambda m: f"{name}: {m}",
    )


class KeepMaskDropout(torch.nn.Module):
    """A test double for nn.Dropout that applies a given boolean keep-mask: x * keep / (1-p)
    in training mode; in eval mode, as nn.Dropout, nothing."""

    def __init__(self, keep: np.ndarray, p: float):
        super().__init__()
        self.keep, self.p = torch.from_numpy(np.array(keep)), p  # keep may be read-only

    def forward(self, x):
        return x * self.keep / (1 - self.p) if self.training else x


def upstream(shape, seed: int = 0, dtype=np.float64) -> np.ndarray:
    """A random upstream gradient (never all ones: that hides softmax bugs)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def torch_sdpa_math(q, k, v, g, attn_mask=None, dropout_mask=None, **kw):
    """Torch SDPA's output and (dq, dk, dv) under the math backend, for upstream gradient g.

    With a boolean keep-mask `dropout_mask`, torch's private testing hook is used:
    out = (P * keep / (1 - dropout_p)) @ v, as sdpa_forward computes it.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    tq, tk, tv = t(q, True), t(k, True), t(v, True)
    mask = None if attn_mask is None else t(attn_mask)
    if dropout_mask is not None:
        p, causal = kw.pop("dropout_p"), kw.pop("is_causal", False)
        out, _ = torch.ops.aten._scaled_dot_product_attention_math(
            tq, tk, tv, mask, p, causal, dropout_mask=t(dropout_mask), **kw
        )
    else:
        with sdpa_kernel([SDPBackend.MATH]):
            out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=mask, **kw)
    out.backward(t(g))
    return n(out), n(tq.grad), n(tk.grad), n(tv.grad)


def assert_close_at_large_logits(got, expected, q, k, v, g) -> None:
    """(out, dq, dk, dv) against a reference when the logits are large, normwise.

    The tolerance grows with the largest score (tolerances.large_logits_f64), relative to the
    size of the terms each result sums: a true gradient may be 0 (one key: dS = dP - D
    cancels), leaving rounding of order eps * |k| * scale * |dout v|.
    """
    from tolerances import F64, large_logits_f64

    scale = 1 / np.sqrt(q.shape[-1])
    rtol = large_logits_f64(np.abs(q @ np.swapaxes(k, -1, -2)).max() * scale)["rtol"]
    terms = np.abs(g).max() * max(np.abs(v).max(), 1.0)
    sizes = {
        "out": np.abs(v).max(),
        "dq": np.abs(k).max() * scale * terms,
        "dk": np.abs(q).max() * scale * terms,
        "dv": terms,
    }
    for (name, size), a, b in zip(sizes.items(), got, expected):
        bound = rtol * max(np.abs(b).max(initial=0.0), size) + F64["atol"]
        np.testing.assert_allclose(a, b, rtol=0, atol=bound, err_msg=name)
