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


def upstream(shape, seed: int = 0, dtype=np.float64) -> np.ndarray:
    """A random upstream gradient (never all ones: that hides softmax bugs)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)
