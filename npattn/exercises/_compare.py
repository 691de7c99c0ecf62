"""How a student's outputs are held against the reference: float64, a tight tolerance, and a
Failure that says which output is wrong, where, and by how much."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RTOL = 1e-9  # relative tolerance against the float64 reference
ATOL = 1e-12  # absolute floor, times max(1, max |expected|) of the output
PRECISION = 1e-6  # differences all below this, relative, suggest float32 or lost precision


@dataclass
class Failure:
    """What went wrong on one input."""

    kind: str  # raised | type | count | shape | nonfinite | value | modified
    text: str  # one sentence, ready for the message
    output: str | None = None  # the output's name, where one output is at fault
    index: tuple | None = None
    expected: float | None = None
    got: float | None = None
    right: list = field(default_factory=list)  # the outputs that agree, when several


def as_outputs(value, n: int):
    """The student's return value as a tuple of n outputs, or a Failure."""
    if n == 1:
        if isinstance(value, tuple) and len(value) != 1:
            return Failure("count", f"returned {len(value)} values; expected 1 array")
        value = value[0] if isinstance(value, tuple) else value
        value = (value,)
    elif not isinstance(value, (tuple, list)):
        return Failure("count", f"returned one {type(value).__name__}; expected a tuple of {n}")
    elif len(value) != n:
        return Failure("count", f"returned {len(value)} values; expected {n}")
    return tuple(value)


def _as_float(value, name: str):
    """value as a float64 array, or a Failure saying why it is not one."""
    if isinstance(value, (np.ndarray, np.generic)):
        if value.dtype.kind not in "fiub":
            return Failure("type", f"{name} has dtype {value.dtype}; return real numbers", name)
        return np.asarray(value, dtype=np.float64)
    if isinstance(value, (float, int)) and not isinstance(value, bool):
        return np.asarray(value, dtype=np.float64)
    return Failure("type", f"{name} is a {type(value).__name__}; return a numpy array", name)


def _low_precision(value) -> str:
    """A note when the student computed in a lower precision than float64."""
    dtype = getattr(value, "dtype", None)
    if dtype is not None and dtype.kind == "f" and dtype.itemsize < 8:
        return f"; it is {dtype}: compute in float64"
    return ""


def compare(names, got, expected) -> Failure | None:
    """The first output of `got` that differs from `expected`, as a Failure (its .right names
    the outputs that agree); None if all agree."""
    failures = [_compare_one(name, g, e) for name, g, e in zip(names, got, expected)]
    wrong = [f for f in failures if f is not None]
    if not wrong:
        return None
    wrong[0].right = [n for n, f in zip(names, failures) if f is None]
    return wrong[0]


def _compare_one(name, given, e) -> Failure | None:
    """How output `name` differs from the expected array e, or None if it agrees."""
    g = _as_float(given, name)
    if isinstance(g, Failure):
        return g
    if g.shape != e.shape:
        return Failure("shape", f"{name} has shape {g.shape}; expected {e.shape}", name)
    bad_finite = ~np.isfinite(g) & np.isfinite(e)
    if bad_finite.any():
        idx = tuple(int(i) for i in np.argwhere(bad_finite)[0])
        return Failure(
            "nonfinite",
            f"{name} is {g[idx]} at index {idx}, where {float(e[idx]) + 0.0:.10g} was expected "
            f"({int(bad_finite.sum())} of {g.size} entries are NaN or inf)",
            name,
            idx,
            float(e[idx]),
            float(g[idx]),
        )
    atol = ATOL * max(1.0, float(np.max(np.abs(e), initial=0.0, where=np.isfinite(e))))
    wrong = ~np.isclose(g, e, rtol=RTOL, atol=atol, equal_nan=True)
    if wrong.any():
        err = np.where(wrong, np.abs(np.nan_to_num(g - e, nan=np.inf)), -1)
        idx = tuple(int(i) for i in np.unravel_index(np.argmax(err), err.shape))
        note = _low_precision(given)
        rel = err[wrong] / np.maximum(np.abs(e[wrong]), atol)
        if not note and np.all(rel <= PRECISION):
            note = (
                f"; every difference is below {PRECISION:g} relative: the function may compute "
                f"in float32 or lose precision somewhere, and the checker compares in float64 "
                f"at rtol {RTOL:g}"
            )
        return Failure(
            "value",
            f"{name} is wrong at index {idx}: expected {float(e[idx]) + 0.0:.10g}, got "
            f"{float(g[idx]) + 0.0:.10g} ({int(wrong.sum())} of {g.size} entries differ; "
            f"this is the largest difference{note})",
            name,
            idx,
            float(e[idx]),
            float(g[idx]),
        )
    return None


def same(names, a, b) -> bool:
    """Do two functions' outputs agree (NaN equal to NaN, shapes equal)?"""
    for g, e in zip(a, b):
        g, e = _as_float(g, ""), _as_float(e, "")
        if isinstance(g, Failure) or isinstance(e, Failure) or g.shape != e.shape:
            return False
        atol = ATOL * max(1.0, float(np.max(np.abs(e), initial=0.0, where=np.isfinite(e))))
        if not np.allclose(g, e, rtol=1e-7, atol=atol, equal_nan=True):
            return False
    return True
