"""Central-difference gradient checks in float64, with no autograd.

For a scalar loss L = sum(out * G) with a fixed random G, each input or parameter x gets
    numeric dL/dx[i] = (L(x + h e_i) - L(x - h e_i)) / 2h
and is compared with the hand-written backward. The truncation error is O(h^2) and the
rounding error O(eps / h); h = 1e-6 in float64 balances them (docs/testing.md).
Dropout masks are held fixed: a module's generator is re-seeded before every evaluation.

    report = check_op(F.sdpa_forward, F.sdpa_backward, {"q": q, "k": k, "v": v})
    report = check_module(npattn.MultiHeadAttention(4, 4, 8, 0.1, 2), x)
    assert report.passed, report
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # for the annotations only: the checker does not import npattn.modules
    from .modules.base import Module

EPS = 1e-6  # central-difference step for float64
ATOL = 1e-5  # the tolerances of torch.autograd.gradcheck
RTOL = 1e-3


@dataclass(frozen=True)
class GradcheckResult:
    """How one gradient compared: max absolute error and normwise relative error."""

    name: str
    shape: tuple
    max_abs_err: float
    max_rel_err: float  # max |analytic - numeric| / max(max |numeric|, atol)
    passed: bool
    zero_gradient: bool = False  # max |numeric| <= atol: the true gradient is 0 (see below)


ZERO_GRADIENT_NOTE = (
    "* zero gradient: max |numeric| <= atol, so the true gradient is 0 and the differences are\n"
    "  rounding noise (~1e-10); max rel err is that noise over atol, not an error of the backward"
)


class GradcheckReport(list):
    """A list of GradcheckResult, one per checked array, printable as a table."""

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self)

    def __str__(self) -> str:
        rows = [f"{'array':<28} {'shape':<18} {'max abs err':>12} {'max rel err':>12}  ok"]
        for r in self:
            rows.append(
                f"{r.name:<28} {str(r.shape):<18} {r.max_abs_err:12.2e} "
                f"{r.max_rel_err:12.2e}  {'yes' if r.passed else 'NO'}"
                + (" *" if r.zero_gradient else "")
            )
        if any(r.zero_gradient for r in self):
            rows.append(ZERO_GRADIENT_NOTE)
        return "\n".join(rows)


def numerical_gradient(loss: Callable[[], float], x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """dloss/dx by central differences, perturbing x in place and restoring it.

    Shapes: x (...) -> grad (...). `loss` must read x (it is a closure over the array).
    """
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("x must be contiguous so that it can be perturbed in place")
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + eps
        plus = loss()
        flat[i] = orig - eps
        minus = loss()
        flat[i] = orig
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def compare(name: str, analytic, numeric, atol: float = ATOL, rtol: float = RTOL):
    """One GradcheckResult: passed when |a - n| <= atol + rtol * |n| everywhere."""
    analytic = np.asarray(analytic, dtype=np.float64)
    if analytic.shape != numeric.shape:
        raise ValueError(
            f"{name}: analytic gradient has shape {analytic.shape}, expected {numeric.shape}"
        )
    err = np.abs(analytic - numeric)
    max_abs = float(err.max(initial=0.0))
    # floored at atol: a gradient that is exactly 0 (a key bias, by softmax's shift
    # invariance) has numeric noise of ~1e-11 and must not read as a relative error of 1
    max_numeric = float(np.abs(numeric).max(initial=0.0))
    max_rel = max_abs / max(max_numeric, atol)
    passed = bool(np.all(err <= atol + rtol * np.abs(numeric)))
    zero = max_numeric <= atol
    return GradcheckResult(name, tuple(numeric.shape), max_abs, max_rel, passed, zero)


def check_op(
    forward: Callable,
    backward: Callable,
    inputs: dict,
    kwargs: dict | None = None,
    *,
    wrt=None,
    seed: int = 0,
    eps: float = EPS,
    atol: float = ATOL,
    rtol: float = RTOL,
) -> GradcheckReport:
    """Check a forward/backward pair: forward(**inputs, **kwargs) -> (out, cache) and
    backward(dout, cache) -> the gradients of `wrt` (default: every input), in that order.

    Inputs are copied to float64; the caller's arrays are never modified.
    """
    x = {k: np.array(v, dtype=np.float64) for k, v in inputs.items()}
    kwargs = dict(kwargs or {})
    wrt = list(x) if wrt is None else list(wrt)
    out, cache = forward(**x, **kwargs)
    G = np.random.default_rng(seed).standard_normal(np.shape(out))  # random upstream grad
    grads = backward(G, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    if len(grads) != len(wrt):
        raise ValueError(f"backward returned {len(grads)} gradients for wrt={wrt}")

    def loss():
        return float(np.sum(forward(**x, **kwargs)[0] * G))

    report = GradcheckReport()
    for name, g in zip(wrt, grads):
        report.append(compare(name, g, numerical_gradient(loss, x[name], eps), atol, rtol))
    return report


def check_module(
    module: Module,
    x,
    *,
    seed: int = 0,
    eps: float = EPS,
    atol: float = ATOL,
    rtol: float = RTOL,
    forward_kwargs: dict | None = None,
) -> GradcheckReport:
    """Check dL/dx and every parameter gradient of a module, in float64.

    Any object with npattn's Module interface will do: forward via __call__, backward(dout),
    grads, parameters(), named_modules() and astype(dtype).

    A float64 copy of the module is checked (the module itself is left as it is); its
    dropout generator is re-seeded with `seed` before each forward, so every evaluation
    draws the same mask. forward_kwargs (a key padding mask, positions) are passed to every
    forward and held fixed.
    """
    kwargs = dict(forward_kwargs or {})
    module = copy.deepcopy(module).astype(np.float64)
    x = np.array(x, dtype=np.float64)
    has_rng = hasattr(module, "rng")

    def run():
        if has_rng:
            _reseed(module, seed)
        return module(x, **kwargs)

    out = run()
    G = np.random.default_rng(seed + 1).standard_normal(out.shape)
    dx = module.backward(G)
    grads = module.grads

    def loss():
        return float(np.sum(run() * G))

    report = GradcheckReport([compare("x", dx, numerical_gradient(loss, x, eps), atol, rtol)])
    for name, p in module.parameters().items():
        report.append(compare(name, grads[name], numerical_gradient(loss, p, eps), atol, rtol))
    return report


def _reseed(module: Module, seed: int) -> None:
    """Give the module (and children sharing its generator) a freshly seeded generator."""
    rng = np.random.default_rng(seed)
    for _, m in module.named_modules():
        if hasattr(m, "rng"):
            m.rng = rng
