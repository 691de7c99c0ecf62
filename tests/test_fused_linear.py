"""F.fused_linear_*: n Linear layers on one input as one GEMM, against the separate layers,
torch (one F.linear on the concatenated weights) and finite differences."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, batch_shapes, dims, seeds, small_dims
from tolerances import F64, FD

from npattn import functional as F
from npattn.gradcheck import check_op


@st.composite
def fused_inputs(draw, n_max: int = 3):
    """x (..., d_in), n weights (d_out_i, d_in), and n biases or None."""
    batch, d_in, n = draw(batch_shapes(0, 2)), draw(dims), draw(st.integers(1, n_max))
    d_outs = [draw(small_dims) for _ in range(n)]
    x = draw(arrays(batch + (d_in,)))
    weights = [draw(arrays((d, d_in))) for d in d_outs]
    biases = [draw(arrays((d,))) for d in d_outs] if draw(st.booleans()) else None
    return x, weights, biases


@given(fused_inputs(), seeds)
def test_equals_the_separate_linear_layers(xwb, seed):
    x, weights, biases = xwb
    out, cache = F.fused_linear_forward(x, weights, biases)
    g = np.random.default_rng(seed).standard_normal(out.shape)
    dx, dweights, dbiases = F.fused_linear_backward(g, cache)
    offsets = np.cumsum([0] + [w.shape[0] for w in weights])
    dx_ref = np.zeros_like(x)
    for i, w in enumerate(weights):
        b = None if biases is None else biases[i]
        ref, ref_cache = F.linear_forward(x, w, b)
        part = slice(offsets[i], offsets[i + 1])
        np.testing.assert_allclose(out[..., part], ref, **F64)
        dxi, dwi, dbi = F.linear_backward(np.ascontiguousarray(g[..., part]), ref_cache)
        dx_ref += dxi
        np.testing.assert_allclose(dweights[i], dwi, **F64)
        if biases is not None:
            np.testing.assert_allclose(dbiases[i], dbi, **F64)
    assert dbiases is None or len(dbiases) == len(weights)
    np.testing.assert_allclose(dx, dx_ref, **F64)


@given(fused_inputs(), seeds)
def test_matches_torch_autograd(xwb, seed):
    from helpers import n, t, torch

    x, weights, biases = xwb
    out, cache = F.fused_linear_forward(x, weights, biases)
    g = np.random.default_rng(seed).standard_normal(out.shape)
    dx, dweights, dbiases = F.fused_linear_backward(g, cache)
    tx, tw = t(x, True), [t(w, True) for w in weights]
    tb = None if biases is None else [t(b, True) for b in biases]
    tout = torch.nn.functional.linear(tx, torch.cat(tw), None if tb is None else torch.cat(tb))
    tout.backward(t(g))
    np.testing.assert_allclose(out, n(tout), **F64)
    np.testing.assert_allclose(dx, n(tx.grad), **F64)
    for a, b in zip(dweights, tw):
        np.testing.assert_allclose(a, n(b.grad), **F64)
    for a, b in zip(dbiases or [], tb or []):
        np.testing.assert_allclose(a, n(b.grad), **F64)


@given(fused_inputs(n_max=2), seeds)
def test_backward_matches_finite_differences(xwb, seed):
    x, weights, biases = xwb
    names = [f"w{i}" for i in range(len(weights))]
    bnames = [] if biases is None else [f"b{i}" for i in range(len(biases))]
    inputs = {"x": x, **dict(zip(names, weights)), **dict(zip(bnames, biases or []))}

    def forward(x, **p):
        bs = None if biases is None else [p[b] for b in bnames]
        return F.fused_linear_forward(x, [p[w] for w in names], bs)

    def backward(dout, cache):
        dx, dws, dbs = F.fused_linear_backward(dout, cache)
        return (dx, *dws, *(dbs or []))

    report = check_op(forward, backward, inputs, wrt=["x", *names, *bnames], seed=seed % 1000, **FD)
    assert report.passed, report


def test_float32_stays_float32_and_inputs_are_untouched():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 4), dtype=np.float32)
    ws = [rng.standard_normal((3, 4), dtype=np.float32) for _ in range(3)]
    copies = [a.copy() for a in (x, *ws)]
    out, cache = F.fused_linear_forward(x, ws)
    grads = F.fused_linear_backward(rng.standard_normal(out.shape, dtype=np.float32), cache)
    assert out.dtype == np.float32 and grads[0].dtype == np.float32
    assert all(d.dtype == np.float32 for d in grads[1])
    for a, b in zip((x, *ws), copies):
        np.testing.assert_array_equal(a, b)


def test_bad_weights_are_refused_with_their_shapes():
    x = np.zeros((2, 4))
    with pytest.raises(ValueError, match="weights must be one or more"):
        F.fused_linear_forward(x, [np.zeros((3, 4)), np.zeros((3, 5))])
    with pytest.raises(ValueError, match="weights must be one or more"):
        F.fused_linear_forward(x, [])
    with pytest.raises(ValueError, match="biases must be None or 2"):
        F.fused_linear_forward(x, [np.zeros((3, 4))] * 2, [np.zeros(3)])
    with pytest.raises(ValueError, match="d_in=4"):
        F.fused_linear_forward(np.zeros((2, 5)), [np.zeros((3, 4))])
