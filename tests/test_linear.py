import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, batch_shapes, dims, seeds
from tolerances import F64, FD

import npattn
from npattn import functional as F
from npattn.gradcheck import check_op


@st.composite
def linear_inputs(draw):
    batch, d_in, d_out = draw(batch_shapes(0, 2)), draw(dims), draw(dims)
    x = draw(arrays(batch + (d_in,)))
    w = draw(arrays((d_out, d_in)))
    b = draw(st.one_of(st.none(), arrays((d_out,))))
    return x, w, b


@given(linear_inputs(), seeds)
def test_backward_matches_finite_differences(xwb, seed):
    x, w, b = xwb
    inputs = {"x": x, "weight": w} if b is None else {"x": x, "weight": w, "bias": b}
    wrt = ["x", "weight"] + ([] if b is None else ["bias"])

    def backward(dout, cache):
        dx, dw, db = F.linear_backward(dout, cache)
        return (dx, dw) if db is None else (dx, dw, db)

    report = check_op(F.linear_forward, backward, inputs, wrt=wrt, seed=seed % 1000, **FD)
    assert report.passed, report


@given(linear_inputs(), seeds)
def test_matches_torch_linear(xwb, seed):
    from helpers import n, t, torch, upstream

    x, w, b = xwb
    out, cache = F.linear_forward(x, w, b)
    g = upstream(out.shape, seed % 1000)
    dx, dw, db = F.linear_backward(g, cache)
    tx, tw = t(x, True), t(w, True)
    tb = None if b is None else t(b, True)
    tout = torch.nn.functional.linear(tx, tw, tb)
    tout.backward(t(g))
    np.testing.assert_allclose(out, n(tout), **F64)
    np.testing.assert_allclose(dx, n(tx.grad), **F64)
    np.testing.assert_allclose(dw, n(tw.grad), **F64)
    if b is not None:
        np.testing.assert_allclose(db, n(tb.grad), **F64)


def test_init_bounds_like_torch():
    lin = npattn.Linear(16, 8, rng=0)
    assert lin.weight.shape == (8, 16) and lin.weight.dtype == np.float32
    assert np.abs(lin.weight).max() <= 1 / 4 and np.abs(lin.bias).max() <= 1 / 4
    assert np.abs(lin.weight).max() > 0.2  # actually spans the range


def test_bad_shapes_name_the_argument():
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., d_in=3\)"):
        F.linear_forward(np.ones((2, 4)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="bias must have shape"):
        F.linear_forward(np.ones((2, 3)), np.ones((5, 3)), np.ones(4))
    out, cache = F.linear_forward(np.ones((2, 3)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="dout must have the forward output's shape"):
        F.linear_backward(np.ones((2, 4)), cache)
