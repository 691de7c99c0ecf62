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


# ---------------------------------------------------------------- Gemma's offset: 1 + scale


@given(rms_inputs(), seeds, st.sampled_from([1.0, -0.5, 2.0]))
def test_offset_matches_torch(inputs, seed, offset):
    x, scale = inputs
    out, cache = F.rmsnorm_forward(x, scale, 1e-6, offset)
    g = upstream(out.shape, seed % 1000)
    dx, dscale = F.rmsnorm_backward(g, cache)
    tx, ts = t(x, True), t(scale, True)
    ref = R.rmsnorm(tx, offset + ts, 1e-6)
    ref.backward(t(g))
    np.testing.assert_allclose(out, n(ref), err_msg="out", **F64)
    np.testing.assert_allclose(dx, n(tx.grad), err_msg="dx", **F64)
    np.testing.assert_allclose(dscale, n(ts.grad), err_msg="dscale", **F64)


@given(rms_inputs(), seeds)
def test_offset_is_a_shift_of_the_scale(inputs, seed):
    """offset c with scale s is offset 0 with scale c + s: same out, dx and dscale."""
    x, scale = inputs
    out, cache = F.rmsnorm_forward(x, scale, 1e-6, 1.0)
    ref, ref_cache = F.rmsnorm_forward(x, 1.0 + scale, 1e-6)
    g = upstream(out.shape, seed % 1000)
    np.testing.assert_allclose(out, ref, rtol=1e-15, atol=1e-15)
    for a, b in zip(F.rmsnorm_backward(g, cache), F.rmsnorm_backward(g, ref_cache)):
        np.testing.assert_allclose(a, b, rtol=1e-15, atol=1e-15)


def test_offset_finite_differences():
    rng = np.random.default_rng(5)
    inputs = {"x": rng.standard_normal((2, 3, 5)), "scale": 0.3 * rng.standard_normal(5)}
    kw = {"eps": 1e-6, "offset": 1.0}
    report = check_op(F.rmsnorm_forward, F.rmsnorm_backward, inputs, kw, **FD)
    assert report.passed, report
    m = npattn.RMSNorm(5, offset=1.0)
    m.load_state_dict({"scale": inputs["scale"]})
    report = check_module(m, inputs["x"])
    assert report.passed, report


def test_offset_module_initialises_zeros_and_matches_torch_port():
    """Gemma's (1 + w) starts at w = 0; torch_port's RMSNorm takes the same offset."""
    import torch_port

    m = npattn.RMSNorm(4, offset=1.0, dtype=np.float64)
    assert list(m.state_dict()) == ["scale"] and np.all(m.scale == 0)
    assert np.all(npattn.RMSNorm(4).scale == 1) and "offset=1.0" in repr(m)
    rng = np.random.default_rng(6)
    m.load_state_dict({"scale": rng.standard_normal(4)})
    port = torch_port.RMSNorm(4, offset=1.0, dtype=torch.float64)
    assert np.all(n(port.scale) == 0)
    port.load_state_dict({k: t(v) for k, v in m.state_dict().items()})
    x, g = rng.standard_normal((2, 3, 4)), upstream((2, 3, 4), 7)
    tx = t(x, True)
    y = port(tx)
    y.backward(t(g))
    np.testing.assert_allclose(m(x), n(y), **F64)
    np.testing.assert_allclose(m.backward(g), n(tx.grad), **F64)
    np.testing.assert_allclose(m.grads["scale"], n(port.scale.grad), **F64)


def test_offset_matches_transformers_gemma3_rmsnorm():
    """transformers' Gemma3RMSNorm: x_hat * (1 + weight), computed in float32."""
    pytest.importorskip("transformers")
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((2, 3, 8)), rng.standard_normal(8)
    hf = Gemma3RMSNorm(8, eps=1e-6)
    assert np.all(n(hf.weight) == 0)
    hf.weight.data = t(w).float()
    m = npattn.RMSNorm(8, 1e-6, offset=1.0, dtype=np.float64)
    m.load_state_dict({"scale": w})
    np.testing.assert_allclose(m(x), n(hf(t(x))), rtol=1e-5, atol=1e-6)


def test_offset_errors():
    for bad, error in ((np.nan, ValueError), (np.inf, ValueError), ("1", TypeError),
                       (True, TypeError)):  # fmt: skip
        with pytest.raises(error, match="offset"):
            F.rmsnorm_forward(np.ones((2, 3)), np.ones(3), 1e-6, bad)
        with pytest.raises(error, match="offset"):
            npattn.RMSNorm(3, offset=bad)
    import torch_port

    with pytest.raises(ValueError, match="offset"):
        torch_port.RMSNorm(3, offset=float("nan"))
