import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, batch_shapes, seeds
from tolerances import F64, FD

from npattn import functional as F
from npattn.gradcheck import check_op

probs = st.floats(0.05, 0.9)


@given(arrays(batch_shapes(1, 3)), probs, seeds)
def test_kept_values_are_scaled_and_dropped_are_zero(x, p, seed):
    out, (keep, *_) = F.dropout_forward(x, p, rng=seed)
    np.testing.assert_allclose(out[keep], x[keep] / (1 - p), **F64)
    assert np.all(out[~keep] == 0)


@given(probs, seeds)
def test_kept_fraction_and_mean_are_preserved(p, seed):
    x = np.ones((200, 200))
    out, (keep, *_) = F.dropout_forward(x, p, rng=seed)
    # 40,000 Bernoulli(1 - p) draws: the std of the fraction is <= 0.0025, so 6 sigma = 0.015
    assert abs(keep.mean() - (1 - p)) < 0.015
    assert abs(out.mean() - 1.0) < 0.015 / (1 - p)


@given(arrays(batch_shapes(1, 3)), probs, seeds)
def test_same_seed_same_mask(x, p, seed):
    a, _ = F.dropout_forward(x, p, rng=seed)
    b, _ = F.dropout_forward(x, p, rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(a, b)


@given(arrays(batch_shapes(1, 3)), probs, seeds)
def test_backward_uses_the_forward_mask(x, p, seed):
    out, cache = F.dropout_forward(x, p, rng=seed)
    g = np.random.default_rng(seed + 1).standard_normal(x.shape)
    dx = F.dropout_backward(g, cache)
    keep = cache[0]
    np.testing.assert_allclose(dx[keep], g[keep] / (1 - p), **F64)
    assert np.all(dx[~keep] == 0)
    report = check_op(
        F.dropout_forward,
        F.dropout_backward,
        {"x": x},
        {"p": p, "keep": keep},
        seed=seed % 1000,
        **FD,
    )
    assert report.passed, report


def test_p_zero_is_identity():
    x = np.arange(6.0)
    out, cache = F.dropout_forward(x, 0.0)
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(F.dropout_backward(x, cache), x)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        F.dropout_forward(np.ones(3), 1.5)
    with pytest.raises(TypeError, match=r"keep must be boolean \(a keep-mask"):
        F.dropout_forward(np.ones(3), 0.5, keep=np.ones(3))
    with pytest.raises(ValueError, match="does not broadcast"):
        F.dropout_forward(np.ones(3), 0.5, keep=np.ones(4, bool))
