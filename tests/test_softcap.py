"""Logit soft-capping (npattn.ops.softcap, sdpa_forward(softcap=...)): torch autograd,
finite differences, invariants. Shapes: scores (..., L, S); q (..., L, E), k, v (..., S, .)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, batch_shapes, bool_masks, sdpa_inputs, seeds
from tolerances import F64, FD

from npattn import functional as F
from npattn.gradcheck import check_op

torch = pytest.importorskip("torch")
import modern_torch as R  # noqa: E402
from helpers import n, t, upstream  # noqa: E402

caps = st.sampled_from([0.5, 2.0, 50.0])


@given(arrays(batch_shapes(1, 3), bound=100.0), caps, seeds)
def test_op_matches_torch_and_stays_within_the_cap(scores, cap, seed):
    out, cache = F.softcap_forward(scores, cap)
    g = upstream(out.shape, seed % 1000)
    ts = t(scores, True)
    ref = cap * torch.tanh(ts / cap)
    ref.backward(t(g))
    np.testing.assert_allclose(out, n(ref), **F64)
    np.testing.assert_allclose(F.softcap_backward(g, cache), n(ts.grad), **F64)
    assert np.all(np.abs(out) <= cap)


@given(st.data(), sdpa_inputs(gqa=False), caps, seeds)
def test_sdpa_with_softcap_and_masks_matches_torch(data, qkv, cap, seed):
    q, k, v = qkv
    shape = np.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (q.shape[-2], k.shape[-2])
    mask = data.draw(st.one_of(st.none(), bool_masks(shape)))  # may hold fully masked rows
    out, cache = F.sdpa_forward(q, k, v, mask, softcap=cap)
    g = upstream(out.shape, seed % 1000)
    grads = F.sdpa_backward(g, cache)
    tq, tk, tv = t(q, True), t(k, True), t(v, True)
    ref = R.attention(tq, tk, tv, mask, softcap=cap)
    ref.backward(t(g))
    for name, a, b in zip(
        ("out", "dq", "dk", "dv"), (out, *grads), (ref, tq.grad, tk.grad, tv.grad)
    ):
        np.testing.assert_allclose(a, n(b), err_msg=name, **F64)
    assert len(grads) == 3


def test_sdpa_softcap_finite_differences_causal_l_not_s():
    rng = np.random.default_rng(0)
    inputs = {"q": 3 * rng.standard_normal((2, 2, 3, 4)), "k": rng.standard_normal((2, 2, 5, 4))}
    inputs["v"] = rng.standard_normal((2, 2, 5, 3))
    kw = {"is_causal": True, "softcap": 1.5}
    report = check_op(F.sdpa_forward, F.sdpa_backward, inputs, kw, **FD)
    assert report.passed, report


@given(sdpa_inputs(), seeds)
def test_a_large_cap_is_no_cap(qkv, seed):
    """tanh(u) = u - u**3 / 3 + ...: with c = 1e6 the scores move by ~1e-12 relative."""
    q, k, v = qkv
    np.testing.assert_allclose(
        F.scaled_dot_product_attention(q, k, v, softcap=1e6),
        F.scaled_dot_product_attention(q, k, v),
        rtol=1e-9,
        atol=1e-9,
    )


def test_bad_cap_is_rejected():
    q = np.ones((2, 3))
    for cap in (0.0, -1.0, np.inf):
        with pytest.raises(ValueError, match="softcap"):
            F.sdpa_forward(q, q, q, softcap=cap)
    with pytest.raises(TypeError, match="softcap"):
        F.sdpa_forward(q, q, q, softcap="big")
