"""F.causal_sdpa_* (blocks above the diagonal skipped) against F.sdpa_* with is_causal=True,
torch's SDPA (math backend), finite differences and invariants.
Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import causal_inputs, seeds
from tolerances import F64, FD

from npattn import functional as F
from npattn.gradcheck import check_op

block_sizes = st.integers(1, 5)


def both(q, k, v, block_size, seed, **kw):
    """(out, grads, cache) of the causal op and of sdpa with is_causal, same upstream gradient."""
    out, cache = F.causal_sdpa_forward(q, k, v, block_size=block_size, **kw)
    ref, ref_cache = F.sdpa_forward(q, k, v, is_causal=True, **kw)
    g = np.random.default_rng(seed).standard_normal(out.shape)
    return (out, F.causal_sdpa_backward(g, cache), cache), (ref, F.sdpa_backward(g, ref_cache))


@given(causal_inputs(), block_sizes, seeds)
def test_equals_sdpa_is_causal_for_any_block_size_and_l_s(qkv, block_size, seed):
    (out, grads, cache), (ref, ref_grads) = both(*qkv, block_size, seed % 1000)
    np.testing.assert_allclose(out, ref, **F64)
    for name, a, b in zip(("dq", "dk", "dv"), grads, ref_grads):
        np.testing.assert_allclose(a, b, err_msg=name, **F64)


@given(causal_inputs(), block_sizes, st.floats(0.05, 0.9), seeds)
def test_dropout_draws_the_same_mask_as_sdpa(qkv, block_size, p, seed):
    kw = dict(dropout_p=p, rng=np.random.default_rng(seed))
    out, cache = F.causal_sdpa_forward(*qkv, block_size=block_size, **kw)
    kw["rng"] = np.random.default_rng(seed)
    ref, ref_cache = F.sdpa_forward(*qkv, is_causal=True, **kw)
    np.testing.assert_allclose(out, ref, **F64)
    g = np.random.default_rng(seed + 1).standard_normal(out.shape)
    for a, b in zip(F.causal_sdpa_backward(g, cache), F.sdpa_backward(g, ref_cache)):
        np.testing.assert_allclose(a, b, **F64)


@given(causal_inputs(), block_sizes, st.floats(0.05, 0.9), seeds)
def test_explicit_dropout_mask_matches_sdpa(qkv, block_size, p, seed):
    q, k, _ = qkv
    keep = np.random.default_rng(seed).random(q.shape[:-1] + (k.shape[-2],)) >= p
    (out, grads, _), (ref, ref_grads) = both(
        *qkv, block_size, seed % 1000, dropout_p=p, dropout_mask=keep
    )
    np.testing.assert_allclose(out, ref, **F64)
    for a, b in zip(grads, ref_grads):
        np.testing.assert_allclose(a, b, **F64)


@given(causal_inputs(), block_sizes, seeds)
def test_matches_torch_sdpa_is_causal(qkv, block_size, seed):
    from helpers import n, t
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention

    out, cache = F.causal_sdpa_forward(*qkv, block_size=block_size)
    g = np.random.default_rng(seed).standard_normal(out.shape)
    grads = F.causal_sdpa_backward(g, cache)
    tq, tk, tv = (t(a, True) for a in qkv)
    with sdpa_kernel([SDPBackend.MATH]):
        tout = scaled_dot_product_attention(tq, tk, tv, is_causal=True)
    tout.backward(t(g))
    np.testing.assert_allclose(out, n(tout), **F64)
    for a, b in zip(grads, (tq.grad, tk.grad, tv.grad)):
        np.testing.assert_allclose(a, n(b), **F64)


@given(causal_inputs(max_side=4), block_sizes, seeds)
def test_backward_matches_finite_differences(qkv, block_size, seed):
    q, k, v = qkv
    report = check_op(
        F.causal_sdpa_forward,
        F.causal_sdpa_backward,
        {"q": q, "k": k, "v": v},
        {"block_size": block_size},
        seed=seed % 1000,
        **FD,
    )
    assert report.passed, report


@given(causal_inputs(), block_sizes)
def test_weights_are_causal_rows_sum_to_one_and_later_tokens_are_ignored(qkv, block_size):
    q, k, v = qkv
    L, S = q.shape[-2], k.shape[-2]
    out, cache = F.causal_sdpa_forward(q, k, v, block_size=block_size)
    w = cache.attn_weights
    np.testing.assert_array_equal(w[..., ~F.causal_mask(L, S)], 0.0)
    np.testing.assert_allclose(w.sum(-1), 1.0, **F64)
    if S > 1:  # the last key is seen only by queries i >= S - 1
        k2, v2 = k.copy(), v.copy()
        k2[..., -1, :] += 1.0
        v2[..., -1, :] += 1.0
        out2, _ = F.causal_sdpa_forward(q, k2, v2, block_size=block_size)
        np.testing.assert_allclose(out2[..., : S - 1, :], out[..., : S - 1, :], **F64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_kept_inputs_untouched_and_out_owned_by_the_caller(dtype):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 9, 4)).astype(dtype) for _ in range(3))
    copies = [a.copy() for a in (q, k, v)]
    out, cache = F.causal_sdpa_forward(q, k, v, block_size=4)
    g = rng.standard_normal(out.shape).astype(dtype)
    expected = F.causal_sdpa_backward(g, cache)
    out *= 2.0  # the caller's array: the backward must not read it
    grads = F.causal_sdpa_backward(g, cache)
    for a, b in zip(grads, expected):
        np.testing.assert_array_equal(a, b)
    assert out.dtype == dtype and all(d.dtype == dtype for d in grads)
    for a, b in zip((q, k, v), copies):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtypes", [(np.float32, np.float64, np.float32), (np.float16,) * 3])
def test_dtype_rule_is_sdpa_forwards(dtypes):
    """The same function as sdpa_forward(is_causal=True): numpy's promotion of q, k and v."""
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 6, 4)).astype(t) for t in dtypes)
    out, cache = F.causal_sdpa_forward(q, k, v, block_size=4)
    ref, ref_cache = F.sdpa_forward(q, k, v, is_causal=True)
    g = rng.standard_normal(out.shape)
    assert out.dtype == ref.dtype == np.result_type(*dtypes)
    for a, b in zip(F.causal_sdpa_backward(g, cache), F.sdpa_backward(g, ref_cache)):
        assert a.dtype == b.dtype == out.dtype


def test_bad_arguments_name_the_argument():
    q = np.zeros((2, 5, 3))
    with pytest.raises(ValueError, match="query and key must share the head dim"):
        F.causal_sdpa_forward(q, np.zeros((2, 5, 4)), np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match="key and value must have the same number of tokens"):
        F.causal_sdpa_forward(q, q, np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match=r"leading dims \(2,\) of query"):
        F.causal_sdpa_forward(q, np.zeros((1, 5, 3)), np.zeros((1, 5, 3)))
    with pytest.raises(ValueError, match="block_size"):
        F.causal_sdpa_forward(q, q, q, block_size=0)
    with pytest.raises(TypeError, match="block_size"):
        F.causal_sdpa_forward(q, q, q, block_size=2.0)
    with pytest.raises(ValueError, match="dropout_mask needs dropout_p"):
        F.causal_sdpa_forward(q, q, q, dropout_mask=np.ones((5, 5), bool))
    with pytest.raises(TypeError, match="dropout_mask"):
        F.causal_sdpa_forward(q, q, q, 0.5, dropout_mask=np.ones((5, 5)))
    with pytest.raises(ValueError, match="dout"):
        F.causal_sdpa_backward(np.zeros((2, 4, 3)), F.causal_sdpa_forward(q, q, q)[1])
