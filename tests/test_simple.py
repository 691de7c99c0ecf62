"""Stage 1: attention without weights. Backward vs torch and finite differences."""

import numpy as np
import pytest
from hypothesis import given
from strategies import arrays, batch_shapes, dims, seeds
from tolerances import F64, FD

import npattn
from npattn import functional as F
from npattn.gradcheck import check_op
from npattn.gradcheck_cases import _simple_forward


@given(batch_shapes(0, 1), dims, dims, seeds)
def test_matches_torch_and_finite_differences(batch, T, d, seed):
    from helpers import n, t, torch, upstream

    x = np.random.default_rng(seed).standard_normal(batch + (T, d))
    context, weights, cache = F.simple_attention_forward(x)
    g = upstream(context.shape, seed % 1000)
    dx = F.simple_attention_backward(g, cache)
    tx = t(x, True)
    tw = torch.softmax(tx @ tx.transpose(-1, -2), dim=-1)
    tc = tw @ tx
    tc.backward(t(g))
    np.testing.assert_allclose(context, n(tc), **F64)
    np.testing.assert_allclose(weights, n(tw), **F64)
    np.testing.assert_allclose(dx, n(tx.grad), **F64)
    report = check_op(_simple_forward, F.simple_attention_backward, {"inputs": x}, **FD)
    assert report.passed, report


@given(arrays(batch_shapes(2, 2)))
def test_loop_forms_equal_matrix_forms(x):
    context, weights = npattn.simple_self_attention(x)
    np.testing.assert_allclose(F.attn_scores_loops(x), x @ x.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(F.context_vectors_loops(x), context, rtol=1e-10, atol=1e-12)
    for i in range(x.shape[0]):
        np.testing.assert_allclose(
            F.context_vector_for_query(x, x[i]), context[i], rtol=1e-10, atol=1e-12
        )


def test_bad_input():
    with pytest.raises(ValueError, match=r"inputs must have shape \(T, d\) or \(B, T, d\)"):
        npattn.simple_self_attention(np.zeros(3))
    with pytest.raises(ValueError, match=r"query must have shape \(d=3,\)"):
        F.attn_scores_for_query(np.zeros((4, 3)), np.zeros(2))


@given(batch_shapes(0, 1), dims, dims, seeds)
def test_is_sdpa_with_q_k_v_all_x_and_scale_1(batch, T, d, seed):
    """The same function as sdpa_forward(x, x, x, scale=1), whose three input gradients sum
    to the three terms of simple_attention_backward's dx."""
    x = np.random.default_rng(seed).standard_normal(batch + (T, d))
    context, weights, cache = F.simple_attention_forward(x)
    ref, ref_cache = F.sdpa_forward(x, x, x, scale=1.0)
    np.testing.assert_allclose(context, ref, **F64)
    np.testing.assert_allclose(weights, ref_cache.attn_weights, **F64)
    g = np.random.default_rng(seed + 1).standard_normal(context.shape)
    dq, dk, dv = F.sdpa_backward(g, ref_cache)
    np.testing.assert_allclose(F.simple_attention_backward(g, cache), dq + dk + dv, **F64)
