"""RMSNorm (npattn.ops.rmsnorm, npattn.RMSNorm): torch autograd, finite differences,
invariants. Shapes: x (..., E), scale (E,)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, batch_shapes, dims, seeds
from tolerances import F64, FD

import npattn
from npattn import functional as F
from npattn.gradcheck import check_module, check_op

torch = pytest.importorskip("torch")
import modern_torch as R  # noqa: E402
from helpers import n, t, upstream  # noqa: E402


@st.composite
def rms_inputs(draw):
    E = draw(dims)
    x = draw(arrays(draw(batch_shapes(0, 3)) + (E,)))
    return x, draw(arrays((E,)))


@given(rms_inputs(), seeds, st.sampled_from([1e-6, 1e-2]))
def test_matches_torch(inputs, seed, eps):
    x, scale = inputs
    out, cache = F.rmsnorm_forward(x, scale, eps)
    g = upstream(out.shape, seed % 1000)
    dx, dscale = F.rmsnorm_backward(g, cache)
    tx, ts = t(x, True), t(scale, True)
    ref = R.rmsnorm(tx, ts, eps)
    ref.backward(t(g))
    np.testing.assert_allclose(out, n(ref), err_msg="out", **F64)
    np.testing.assert_allclose(dx, n(tx.grad), err_msg="dx", **F64)
    np.testing.assert_allclose(dscale, n(ts.grad), err_msg="dscale", **F64)


def test_finite_differences():
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((2, 3, 5)), "scale": rng.standard_normal(5)}
    report = check_op(F.rmsnorm_forward, F.rmsnorm_backward, inputs, {"eps": 1e-6}, **FD)
    assert report.passed, report


def test_module_finite_differences_and_keys():
    m = npattn.RMSNorm(4)
    assert list(m.state_dict()) == ["scale"] and np.all(m.scale == 1)
    m.load_state_dict({"scale": np.random.default_rng(1).standard_normal(4)})
    report = check_module(m, np.random.default_rng(2).standard_normal((2, 3, 4)))
    assert report.passed, report


@given(rms_inputs(), st.floats(0.1, 10.0))
def test_unit_rms_and_scale_invariance(inputs, c):
    """With eps = 0: rms(out / scale) = 1, and rmsnorm(c * x) = rmsnorm(x) for c > 0."""
    x, _ = inputs
    x = x + 0.5  # no all-zero vector (its rms is 0)
    ones = np.ones(x.shape[-1])
    out = F.rmsnorm_forward(x, ones, eps=0.0)[0]
    np.testing.assert_allclose(np.sqrt(np.mean(out**2, axis=-1)), 1.0, rtol=1e-12)
    np.testing.assert_allclose(F.rmsnorm_forward(c * x, ones, eps=0.0)[0], out, rtol=1e-12)


def test_errors_and_dtype():
    with pytest.raises(ValueError, match="scale"):
        F.rmsnorm_forward(np.ones((2, 3)), np.ones(2))
    out, cache = F.rmsnorm_forward(np.ones((2, 3), np.float32), np.ones(3, np.float32))
    assert out.dtype == np.float32 and all(
        g.dtype == np.float32 for g in F.rmsnorm_backward(out, cache)
    )
