"""Attention sinks (npattn.ops.sinks, sdpa_forward(sinks=...)): torch autograd including the
sinks' gradient, finite differences, invariants. Shapes: scores (..., L, S), sinks (H,) or
broadcastable to (..., L, 1)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, bool_masks, sdpa_inputs, seeds
from tolerances import F64, FD

from npattn import functional as F
from npattn.gradcheck import check_op

torch = pytest.importorskip("torch")
import modern_torch as R  # noqa: E402
from helpers import n, t, upstream  # noqa: E402


@st.composite
def sinks_for(draw, scores_shape):
    """(H,) per head when there is a head axis, else an array broadcastable to (..., L, 1)."""
    if len(scores_shape) >= 3 and draw(st.booleans()):
        return draw(arrays((scores_shape[-3],)))
    lead = tuple(1 if draw(st.booleans()) else d for d in scores_shape[:-1])
    return draw(arrays(lead + (1,)))


@given(st.data(), sdpa_inputs(gqa=True), seeds, st.booleans())
def test_sdpa_with_sinks_matches_torch(data, qkv, seed, masked):
    q, k, v = qkv
    groups = q.shape[-3] // k.shape[-3]
    shape = q.shape[:-1] + (k.shape[-2],)
    sinks = data.draw(sinks_for(shape))
    mask = data.draw(bool_masks(shape)) if masked else None  # may hold fully masked rows
    out, cache = F.sdpa_forward(q, k, v, mask, enable_gqa=True, sinks=sinks)
    g = upstream(out.shape, seed % 1000)
    dq, dk, dv, dsinks = F.sdpa_backward(g, cache)
    tq, tk, tv, ts = t(q, True), t(k, True), t(v, True), t(sinks, True)
    rk, rv = tk.repeat_interleave(groups, dim=-3), tv.repeat_interleave(groups, dim=-3)
    ref = R.attention(tq, rk, rv, mask, sinks=ts)
    ref.backward(t(g))
    got = (out, dq, dk, dv, dsinks)
    expected = (ref, tq.grad, tk.grad, tv.grad, ts.grad)
    for name, a, b in zip(("out", "dq", "dk", "dv", "dsinks"), got, expected):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, n(b), err_msg=name, **F64)


@given(arrays(st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5))), seeds)
def test_op_is_the_softmax_of_the_row_with_the_sink_dropped(scores, seed):
    H = scores.shape[0]
    sinks = np.random.default_rng(seed).standard_normal(H)
    w, cache = F.softmax_with_sink_forward(scores, sinks)
    g = upstream(w.shape, seed % 1000)
    dscores, dsinks = F.softmax_with_sink_backward(g, cache)
    ts, tsink = t(scores, True), t(sinks, True)
    full = torch.cat([ts, tsink.view(H, 1, 1).expand(H, scores.shape[1], 1)], dim=-1)
    ref = torch.softmax(full, dim=-1)[..., :-1]
    ref.backward(t(g))
    np.testing.assert_allclose(w, n(ref), **F64)
    np.testing.assert_allclose(dscores, n(ts.grad), **F64)
    np.testing.assert_allclose(dsinks, n(tsink.grad), **F64)
    assert np.all(w.sum(-1) < 1)  # the sink takes a share of every row


def test_finite_differences_with_mask_and_sinks():
    rng = np.random.default_rng(0)
    r = rng.standard_normal
    mask = rng.random((3, 5)) > 0.3
    mask[1] = False  # a fully masked row: output 0, the sink takes everything
    inputs = {"q": r((2, 2, 3, 4)), "k": r((2, 2, 5, 4)), "v": r((2, 2, 5, 3)), "sinks": r(2)}
    report = check_op(F.sdpa_forward, F.sdpa_backward, inputs, {"attn_mask": mask}, **FD)
    assert report.passed, report


@given(sdpa_inputs(min_batch_dims=1), seeds)
def test_rows_sum_below_one_and_a_very_negative_sink_is_no_sink(qkv, seed):
    q, k, v = qkv
    sinks = np.random.default_rng(seed).standard_normal(q.shape[:-2] + (1, 1))
    w = F.sdpa_forward(q, k, v, sinks=sinks)[1].attn_weights
    assert np.all(w.sum(-1) < 1)
    out, cache = F.sdpa_forward(q, k, v, sinks=np.full(q.shape[-3:-2], -1e4))
    np.testing.assert_allclose(out, F.scaled_dot_product_attention(q, k, v), rtol=1e-12, atol=1e-12)


def test_fully_masked_rows_give_zero_and_pass_no_gradient():
    rng = np.random.default_rng(0)
    q, k, v = (
        rng.standard_normal((2, 3, 4)),
        rng.standard_normal((2, 5, 4)),
        rng.standard_normal((2, 5, 2)),
    )
    mask = np.ones((3, 5), bool)
    mask[2] = False
    out, cache = F.sdpa_forward(q, k, v, mask, sinks=np.array([0.5, -1.0]))
    assert np.all(out[:, 2] == 0)
    dq, _, _, dsinks = F.sdpa_backward(upstream(out.shape), cache)
    assert np.all(dq[:, 2] == 0) and np.all(np.isfinite(dsinks))


def test_sinks_shape_is_checked():
    q = np.ones((2, 3, 4, 5))
    with pytest.raises(ValueError, match="sinks"):
        F.sdpa_forward(q, q, q, sinks=np.ones(2))  # (H,) must be 3 heads
    with pytest.raises(ValueError, match="sinks"):
        F.sdpa_forward(q, q, q, sinks=np.ones((4, 2)))
