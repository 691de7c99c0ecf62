"""The error model: when is a module's result close enough to the float64 truth?

The truth is the npattn reference run in float64 on the very numbers the module sees (its
weights and input rounded to its dtype). For each tensor (output, dL/dx, each parameter
gradient) the kit measures the normwise error

    error(a) = ||a - truth|| / ||truth||          (Frobenius norms over the whole tensor)

and passes the module when

    error(module) <= FACTOR * error(plain) + FLOOR[dtype]

where `plain` is a plain torch implementation of the same function (the chapter's formula,
eager torch ops) run at the module's dtype on the same input. In float64 the plain error is
rounding, far below FLOOR[float64], and is not computed. docs/testing.md gives the reasons.
Passing rtol or atol replaces the model by an element-wise test |a - t| <= atol + rtol * |t|.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import KitSetupError, Mismatch, fmt

FACTOR = 4.0  # the module may be this many times less accurate than plain torch
FLOOR = {  # normwise error always allowed, whatever plain torch achieved
    torch.float64: 1e-10,  # rounding is ~1e-15 here; a bug is ~1e-2 or more
    torch.float32: 8 * torch.finfo(torch.float32).eps,  # 9.5e-7
    torch.bfloat16: 2 * torch.finfo(torch.bfloat16).eps,  # 1.6e-2
    torch.float16: 2 * torch.finfo(torch.float16).eps,  # 2.0e-3
}


@dataclass(frozen=True)
class Rule:
    """How one check judges: the error model (factor, floor) or, given rtol/atol, elementwise."""

    factor: float
    floor: float
    rtol: float | None = None
    atol: float | None = None
    dtype: object = None  # the dtype judged, for the rounding-level hint

    @property
    def elementwise(self) -> bool:
        return self.rtol is not None or self.atol is not None

    @property
    def needs_plain(self) -> bool:
        return not self.elementwise and self.factor > 0


def rule_for(dtype, *, factor=None, floor=None, rtol=None, atol=None) -> Rule:
    """The Rule for a dtype; arguments given override the defaults."""
    if dtype not in FLOOR:
        raise KitSetupError(f"dtype must be one of {list(FLOOR)}, got {dtype}")
    if rtol is not None or atol is not None:
        return Rule(0.0, 0.0, rtol=rtol or 0.0, atol=atol or 0.0, dtype=dtype)
    if factor is None:
        factor = 0.0 if dtype == torch.float64 else FACTOR
    return Rule(float(factor), float(FLOOR[dtype] if floor is None else floor), dtype=dtype)


# normwise errors that one step at a lower precision leaves in an attention layer (from a
# tenth of that dtype's unit roundoff, a softmax alone at T = 2, to many roundings added
# up); between float16's and bfloat16's both are named
ROUNDING_LEVELS = (  # (lowest, highest, dtypes that leave such an error)
    (1e-9, 3e-5, (torch.float32,)),
    (3e-5, 6e-4, (torch.float16,)),
    (6e-4, 2e-3, (torch.float16, torch.bfloat16)),
    (2e-3, 1.5e-2, (torch.bfloat16,)),
)
ISLANDS = (
    "the softmax (softmax(..., dtype=torch.float32), .float() before it), RMSNorm "
    "(computed in float32 and cast back, or its weight kept in a lower dtype) and the RoPE "
    "tables (cos and sin built in float32, or cast to the activations' dtype)"
)


def rounding_hint(error: float, dtype) -> str:
    """A sentence when `error` is the size that rounding to a dtype less precise than the one
    checked leaves: then the likely cause is a step computing in that dtype, not a bug in
    the maths. Empty otherwise."""
    bits = {torch.float64: 53, torch.float32: 24, torch.float16: 11, torch.bfloat16: 8}
    if dtype not in bits or not np.isfinite(error):
        return ""
    for lowest, highest, lows in ROUNDING_LEVELS:
        lows = [str(d).replace("torch.", "") for d in lows if bits[d] < bits[dtype]]
        if lows and lowest <= error < highest:
            name = " or ".join(lows)
            return (
                f"; this error is at {name} rounding level: if part of the module computes "
                f"in {name}, look where such islands usually are: {ISLANDS}; if none does, "
                f"it is a bug this small (a scale or an eps slightly off)"
            )
    return ""
    for low, lowest, highest in ROUNDING_LEVELS:
        if bits[low] < bits[dtype] and lowest <= error <= highest:
            name = str(low).replace("torch.", "")
            return (
                f"; this error is at {name} rounding level: if part of the module computes "
                f"in {name}, look where such islands usually are: {ISLANDS}; if none does, "
                f"it is a bug this small (a scale or an eps slightly off)"
            )
    return ""


@dataclass(frozen=True)
class Judgement:
    """One tensor judged: its normwise error, plain torch's, and the bound (NaN stays NaN)."""

    quantity: str
    error: float
    plain_error: float | None
    allowed: float
    passed: bool

    @property
    def ratio(self) -> float:
        """error / plain_error: how many times less accurate than plain torch."""
        if not self.plain_error:
            return float("nan")
        return self.error / self.plain_error


def normwise_error(a: np.ndarray, truth: np.ndarray, scale: float) -> float:
    """||a - truth|| / scale; NaN if a has a NaN where truth has none, inf for an inf."""
    both = np.isnan(a) & np.isnan(truth) | (a == truth)  # agreeing NaN/inf entries
    diff = np.where(both, 0.0, a.astype(np.float64) - truth)
    if np.isnan(diff).any():
        return float("nan")
    norm = float(np.linalg.norm(diff.ravel()))
    if scale == 0.0:
        return 0.0 if norm == 0.0 else float("inf")
    return norm / scale


def judge(
    quantity: str, got, truth, plain, rule: Rule, example, scale: float | None = None
) -> tuple[Judgement, Mismatch | None]:
    """Judge `got` against the float64 `truth` (numpy arrays), with `plain` (or None) as the
    yardstick. scale: the norm the error is relative to (default ||truth||)."""
    if got.shape != truth.shape:
        detail = f"shape {tuple(got.shape)}, expected {tuple(truth.shape)}"
        j = Judgement(quantity, float("inf"), None, 0.0, False)
        return j, Mismatch(quantity, example, tuple(truth.shape), float("inf"), detail)
    got = got.astype(np.float64)
    if not np.isfinite(truth).all():  # no agreement is possible with a broken truth
        return _broken_truth(quantity, got, truth, example)
    finite_truth = np.nan_to_num(truth, nan=0.0, posinf=0.0, neginf=0.0)
    if scale is None:
        scale = float(np.linalg.norm(finite_truth.ravel()))
    err = normwise_error(got, truth, scale)
    plain_err = None
    if rule.elementwise:
        bound = float("nan")
        excess = np.abs(got - truth) - (rule.atol + rule.rtol * np.abs(finite_truth))
        bad = np.isnan(excess) & ~(np.isnan(got) & np.isnan(truth)) | (excess > 0)
        passed = not bad.any()
    else:
        if plain is not None and rule.factor > 0:
            plain_err = normwise_error(plain.astype(np.float64), truth, scale)
        yardstick = plain_err if plain_err is not None and np.isfinite(plain_err) else 0.0
        bound = rule.factor * yardstick + rule.floor
        passed = bool(err <= bound)  # NaN fails
    judgement = Judgement(quantity, err, plain_err, bound, passed)
    if passed:
        return judgement, None
    return judgement, Mismatch(
        quantity,
        example,
        tuple(truth.shape),
        _max_abs(got, truth),
        _detail(got, truth, judgement, rule),
        err,
        bound,
    )


def _broken_truth(quantity, got, truth, example) -> tuple[Judgement, Mismatch]:
    """A NaN or inf in the float64 reference's result: the check fails, whatever the module
    computed (NaN equal to NaN is no agreement), and says that the reference is broken."""
    bad = np.argwhere(~np.isfinite(truth))
    i = tuple(int(n) for n in bad[0])
    detail = (
        f"the npattn reference's {quantity} holds {len(bad)} non-finite entries of "
        f"{truth.size} (the first at index {i}: {fmt(float(truth[i]))}), so the reference "
        f"is broken on this input and nothing can be checked against it: look at the weights "
        f"it was given (your module's, through the weight map) and its configuration"
    )
    j = Judgement(quantity, float("nan"), None, 0.0, False)
    return j, Mismatch(quantity, example, tuple(truth.shape), float("nan"), detail, float("nan"))


def _max_abs(got, truth) -> float:
    diff = np.abs(got - truth)
    return float("nan") if np.isnan(diff).any() else float(diff.max(initial=0.0))


def _detail(got, truth, j: Judgement, rule: Rule) -> str:
    diff = np.abs(got - truth)
    nan_at = np.argwhere(np.isnan(got) & ~np.isnan(truth))
    if len(nan_at):
        i = tuple(int(n) for n in nan_at[0])
        where = f"{len(nan_at)} of {got.size} entries are NaN, the first at index {i}"
    else:
        i = np.unravel_index(np.nanargmax(diff), diff.shape) if diff.size else ()
        i = tuple(int(n) for n in i)
        where = f"worst at index {i}"
    values = f"got {fmt(float(got[i]))}, expected {fmt(float(truth[i]))}" if got.size else ""
    if rule.elementwise:
        head = f"max abs error {fmt(_max_abs(got, truth))} (rtol={rule.rtol:g}, atol={rule.atol:g})"
    elif j.plain_error is None:
        head = f"normwise error {fmt(j.error)} > allowed {fmt(j.allowed)}"
    else:
        head = (
            f"normwise error {fmt(j.error)} > allowed {fmt(j.allowed)} "
            f"= {rule.factor:g} x plain torch's {fmt(j.plain_error)} + {rule.floor:.2g}"
        )
    hint = "" if rule.elementwise else rounding_hint(j.error, rule.dtype)
    return f"{head}; {where}: {values}{hint}"
