import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, batch_shapes, dims, seeds
from tolerances import F64, FD

from npattn import functional as F
from npattn.gradcheck import check_op
from npattn.gradcheck_cases import (
    _method1_backward,
    _method1_forward,
    _method2_backward,
    _method2_forward,
)


@given(dims, st.one_of(st.none(), dims))
def test_causal_mask_is_top_left_tril_like_torch(L, S):
    from helpers import n, torch

    mask = F.causal_mask(L, S)
    S = L if S is None else S
    assert mask.dtype == np.bool_ and mask.shape == (L, S)
    np.testing.assert_array_equal(mask, n(torch.ones(L, S, dtype=torch.bool).tril()))


@st.composite
def scores_and_mask(draw):
    batch, T = draw(batch_shapes(0, 2)), draw(dims)
    return draw(arrays(batch + (T, T))), F.causal_mask(T)


@given(scores_and_mask(), seeds)
def test_chapter_methods_are_equivalent_forward_and_backward(sm, seed):
    """tril-then-renormalise (method 1) == -inf before softmax (method 2), weights and grads."""
    scores, mask = sm
    w1, c1 = _method1_forward(scores, mask)
    w2, c2 = _method2_forward(scores, mask)
    np.testing.assert_allclose(w1, w2, **F64)
    g = np.random.default_rng(seed).standard_normal(w1.shape)
    np.testing.assert_allclose(_method1_backward(g, c1), _method2_backward(g, c2), **F64)


@given(scores_and_mask(), seeds)
def test_masked_rows_sum_to_one_and_future_is_zero(sm, seed):
    scores, mask = sm
    w, _ = _method2_forward(scores, mask)
    np.testing.assert_allclose(w.sum(-1), 1.0, **F64)
    assert np.all(w[..., ~mask] == 0)


@given(scores_and_mask(), seeds)
def test_both_methods_match_finite_differences(sm, seed):
    scores, mask = sm
    for fwd, bwd in ((_method1_forward, _method1_backward), (_method2_forward, _method2_backward)):
        report = check_op(fwd, bwd, {"attn_scores": scores}, {"mask": mask}, seed=seed % 999, **FD)
        assert report.passed, report


@given(scores_and_mask(), seeds)
def test_matches_torch_masked_fill_softmax(sm, seed):
    from helpers import n, t, torch, upstream

    scores, mask = sm
    w, cache = _method2_forward(scores, mask)
    g = upstream(w.shape, seed % 1000)
    ts = t(scores, True)
    tw = torch.softmax(ts.masked_fill(~t(mask), -torch.inf), dim=-1)
    tw.backward(t(g))
    np.testing.assert_allclose(w, n(tw), **F64)
    np.testing.assert_allclose(_method2_backward(g, cache), n(ts.grad), **F64)


def test_renormalize_fully_masked_row_is_zero_not_nan():
    out, cache = F.mask_renormalize_forward(np.full((2, 3), 1 / 3), np.array([False, True, True]))
    assert np.isfinite(out).all()
    out, cache = F.mask_renormalize_forward(np.full((2, 3), 1 / 3), np.zeros((2, 3), bool))
    np.testing.assert_array_equal(out, 0.0)
    np.testing.assert_array_equal(F.mask_renormalize_backward(np.ones((2, 3)), cache), 0.0)


def test_bad_masks():
    with pytest.raises(TypeError, match="mask must be boolean"):
        F.mask_scores_forward(np.zeros((3, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"does not broadcast to attn_scores of shape \(3, 3\)"):
        F.mask_scores_forward(np.zeros((3, 3)), np.ones((4, 3), bool))
    with pytest.raises(ValueError, match="L must be >= 1"):
        F.causal_mask(0)
