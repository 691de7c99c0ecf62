import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import arrays, seeds
from tolerances import F64, FD

from npattn import functional as F
from npattn.gradcheck import check_op
from npattn.gradcheck_cases import _softmax_backward, _softmax_forward

shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6)


@given(arrays(shapes))
def test_rows_sum_to_one_and_are_nonnegative(x):
    y = F.softmax(x)
    assert np.all(y >= 0)
    np.testing.assert_allclose(y.sum(-1), 1.0, **F64)


@given(arrays(shapes), st.floats(-50, 50))
def test_shift_leaves_softmax_unchanged(x, c):
    np.testing.assert_allclose(F.softmax(x + c), F.softmax(x), rtol=1e-9, atol=1e-12)


@given(arrays(shapes, bound=5.0))
def test_stable_equals_naive_where_naive_does_not_overflow(x):
    np.testing.assert_allclose(F.softmax(x), F.softmax_naive(x), rtol=1e-12, atol=1e-15)


def test_naive_overflows_and_stable_does_not():
    x = np.array([1000.0, 1000.0])
    with np.errstate(over="ignore", invalid="ignore"):
        assert np.isnan(F.softmax_naive(x)).all()
    np.testing.assert_array_equal(F.softmax(x), [0.5, 0.5])


def test_fully_masked_row_gives_zeros_and_zero_gradient():
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, -np.inf, 1.0]])
    y = F.softmax(x)
    np.testing.assert_array_equal(y[0], 0.0)
    assert np.isfinite(y).all()
    dx = F.softmax_backward(np.ones_like(y) * np.arange(3), y)
    np.testing.assert_array_equal(dx[0], 0.0)


@given(arrays(shapes), st.sampled_from([np.float32, np.float64]))
def test_dtype_follows_input(x, dtype):
    assert F.softmax(x.astype(dtype)).dtype == dtype


@given(arrays(shapes))
def test_input_not_modified(x):
    x0 = x.copy()
    F.softmax(x)
    np.testing.assert_array_equal(x, x0)


@given(arrays(shapes), seeds)
def test_backward_matches_finite_differences(x, seed):
    report = check_op(_softmax_forward, _softmax_backward, {"x": x}, seed=seed % 1000, **FD)
    assert report.passed, report


@given(arrays(shapes), seeds)
def test_backward_of_all_ones_is_zero_but_random_is_not(x, seed):
    """Why tests never use an all-ones upstream gradient: softmax's is exactly zero."""
    y = F.softmax(x)
    np.testing.assert_allclose(F.softmax_backward(np.ones_like(y), y), 0.0, atol=1e-14)
    g = np.random.default_rng(seed).standard_normal(y.shape)
    dx = F.softmax_backward(g, y)
    # with a random g the gradient is zero only if every row has one entry or a constant g
    if x.shape[-1] > 1:
        assert np.abs(dx).max() > 0


def test_backward_matches_torch():
    from helpers import n, t, torch, upstream

    x = np.random.default_rng(0).standard_normal((3, 4, 7))
    g = upstream(x.shape, 1)
    tx = t(x, True)
    torch.softmax(tx, -1).backward(t(g))
    y = F.softmax(x)
    np.testing.assert_allclose(y, n(torch.softmax(tx, -1)), **F64)
    np.testing.assert_allclose(F.softmax_backward(g, y), n(tx.grad), **F64)


@given(arrays(shapes), st.sampled_from([np.float32, np.float64]))
def test_inplace_equals_softmax_and_writes_into_its_argument(x, dtype):
    x = x.astype(dtype)
    x[..., 0] = -np.inf  # a fully masked row where the last axis has one entry
    want = F.softmax(x)
    buf = x.copy()
    y = F.softmax_inplace(buf)
    assert y is buf and y.dtype == dtype
    np.testing.assert_array_equal(y, want)
    assert np.isfinite(y).all()


def test_inplace_refuses_non_float_arrays():
    with pytest.raises(TypeError, match="floating numpy array"):
        F.softmax_inplace(np.arange(3))
    with pytest.raises(TypeError, match="floating numpy array"):
        F.softmax_inplace([1.0, 2.0])


def test_bad_axis_and_scale_are_named():
    import pytest

    with pytest.raises(ValueError, match=r"axis=5 is out of range for an array of shape \(2, 3\)"):
        F.softmax(np.zeros((2, 3)), axis=5)
    q = np.zeros((2, 3))
    with pytest.raises(TypeError, match="scale must be a float or None, got 'a'"):
        F.sdpa_forward(q, q, q, scale="a")
    with pytest.raises(ValueError, match="scale must be finite"):
        F.causal_sdpa_forward(q, q, q, scale=np.inf)
