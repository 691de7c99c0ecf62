"""npattn.functional.sdpa_* against torch's SDPA (math backend), finite differences and
invariants. Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import bool_masks, float_masks, sdpa_inputs, seeds
from tolerances import F64, FD

from npattn import functional as F
from npattn.gradcheck import check_op

torch = pytest.importorskip("torch")
from helpers import assert_close_at_large_logits, n, t, upstream  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402


def torch_sdpa(q, k, v, g, **kw):
    """Torch's output and (dq, dk, dv) under the math backend, for upstream gradient g."""
    tq, tk, tv = t(q, True), t(k, True), t(v, True)
    mask = kw.pop("attn_mask", None)
    keep = kw.pop("dropout_mask", None)
    if keep is not None:
        out, _ = torch.ops.aten._scaled_dot_product_attention_math(
            tq,
            tk,
            tv,
            None if mask is None else t(mask),
            kw.pop("dropout_p"),
            kw.pop("is_causal", False),
            dropout_mask=t(keep),
            **kw,
        )
    else:
        with sdpa_kernel([SDPBackend.MATH]):
            out = torch.nn.functional.scaled_dot_product_attention(
                tq, tk, tv, attn_mask=None if mask is None else t(mask), **kw
            )
    out.backward(t(g))
    return n(out), n(tq.grad), n(tk.grad), n(tv.grad)


def check_against_torch(q, k, v, seed, **kw):
    out, cache = F.sdpa_forward(q, k, v, **kw)
    g = upstream(out.shape, seed)
    grads = F.sdpa_backward(g, cache)
    expected = torch_sdpa(q, k, v, g, **kw)
    for name, a, b in zip(("out", "dq", "dk", "dv"), (out,) + grads, expected):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, err_msg=name, **F64)


@given(sdpa_inputs(), seeds, st.one_of(st.none(), st.floats(0.05, 2.0)))
def test_no_mask_any_rank_custom_scale(qkv, seed, scale):
    check_against_torch(*qkv, seed % 1000, scale=scale)


@given(sdpa_inputs(), seeds)
def test_is_causal_top_left_with_l_not_equal_s(qkv, seed):
    check_against_torch(*qkv, seed % 1000, is_causal=True)


@given(st.data(), sdpa_inputs(), seeds)
def test_boolean_masks_of_every_broadcastable_shape(data, qkv, seed):
    q, k, v = qkv
    shape = np.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (q.shape[-2], k.shape[-2])
    check_against_torch(q, k, v, seed % 1000, attn_mask=data.draw(bool_masks(shape)))


@given(st.data(), sdpa_inputs(), seeds)
def test_float_masks_with_minus_inf(data, qkv, seed):
    q, k, v = qkv
    shape = np.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (q.shape[-2], k.shape[-2])
    check_against_torch(q, k, v, seed % 1000, attn_mask=data.draw(float_masks(shape)))


@given(sdpa_inputs(gqa=True), seeds)
def test_gqa(qkv, seed):
    check_against_torch(*qkv, seed % 1000, enable_gqa=True)


@given(st.data(), sdpa_inputs(min_batch_dims=1), st.floats(0.05, 0.9), seeds)
def test_explicit_dropout_mask(data, qkv, p, seed):
    q, k, v = qkv
    shape = q.shape[:-2] + (q.shape[-2], k.shape[-2])
    keep = np.random.default_rng(seed).random(shape) >= p
    check_against_torch(q, k, v, seed % 1000, dropout_p=p, dropout_mask=keep)


@given(sdpa_inputs(), seeds)
def test_extreme_logits_stay_finite(qkv, seed):
    q, k, v = qkv
    q300, k300 = q * 300, k * 300  # logits up to ~1e6: s - max rounds to a few ulps of |s|
    out, cache = F.sdpa_forward(q300, k300, v)
    g = upstream(out.shape, seed % 1000)
    got = (out,) + F.sdpa_backward(g, cache)
    assert_close_at_large_logits(got, torch_sdpa(q300, k300, v, g), q300, k300, v, g)
    out, _ = F.sdpa_forward(q * 1e4, k * 1e4, v)
    assert np.isfinite(out).all()


def test_fully_masked_rows_give_zero_output_and_gradient():
    rng = np.random.default_rng(0)
    q, k, v = (
        rng.standard_normal((2, 4, 3)),
        rng.standard_normal((2, 5, 3)),
        rng.standard_normal((2, 5, 2)),
    )
    mask = rng.random((4, 5)) > 0.5
    mask[1] = False
    for m in (mask, np.where(mask, 0.0, -np.inf)):
        out, cache = F.sdpa_forward(q, k, v, attn_mask=m)
        np.testing.assert_array_equal(out[:, 1], 0.0)
        dq, dk, dv = F.sdpa_backward(upstream(out.shape), cache)
        np.testing.assert_array_equal(dq[:, 1], 0.0)
        assert all(np.isfinite(d).all() for d in (dq, dk, dv))
        check_against_torch(q, k, v, 1, attn_mask=m)


@given(sdpa_inputs(), seeds)
def test_backward_matches_finite_differences(qkv, seed):
    q, k, v = qkv
    report = check_op(
        F.sdpa_forward,
        F.sdpa_backward,
        {"q": q, "k": k, "v": v},
        {"is_causal": seed % 2 == 0},
        seed=seed % 1000,
        **FD,
    )
    assert report.passed, report


@given(sdpa_inputs(), seeds)
def test_attention_rows_sum_to_one(qkv, seed):
    _, cache = F.sdpa_forward(*qkv, is_causal=True)
    np.testing.assert_allclose(cache.attn_weights.sum(-1), 1.0, **F64)


@given(sdpa_inputs(), seeds)
def test_causal_output_ignores_later_tokens(qkv, seed):
    q, k, v = qkv
    L, S = q.shape[-2], k.shape[-2]
    out, _ = F.sdpa_forward(q, k, v, is_causal=True)
    rng = np.random.default_rng(seed)
    k2, v2 = k.copy(), v.copy()
    k2[..., L:, :] = rng.standard_normal(k2[..., L:, :].shape)  # keys no query can see
    v2[..., L:, :] = rng.standard_normal(v2[..., L:, :].shape)
    np.testing.assert_allclose(F.sdpa_forward(q, k2, v2, is_causal=True)[0], out, **F64)
    if S > 1 and L > 1:  # changing the last key changes only the last query's output
        k2, v2 = k.copy(), v.copy()
        k2[..., S - 1, :] += 1.0
        v2[..., S - 1, :] += 1.0
        out2 = F.sdpa_forward(q, k2, v2, is_causal=True)[0]
        rows = min(L, S - 1)
        np.testing.assert_allclose(out2[..., :rows, :], out[..., :rows, :], **F64)


@given(sdpa_inputs(min_batch_dims=0), seeds)
def test_permuting_tokens_permutes_output_without_mask(qkv, seed):
    q, k, v = qkv
    rng = np.random.default_rng(seed)
    pq, pk = rng.permutation(q.shape[-2]), rng.permutation(k.shape[-2])
    out = F.scaled_dot_product_attention(q, k, v)
    out_p = F.scaled_dot_product_attention(q[..., pq, :], k[..., pk, :], v[..., pk, :])
    np.testing.assert_allclose(out_p, out[..., pq, :], rtol=1e-9, atol=1e-12)


@given(sdpa_inputs(), seeds)
def test_inputs_not_modified_and_float32_kept(qkv, seed):
    q, k, v = (a.astype(np.float32) for a in qkv)
    copies = [a.copy() for a in (q, k, v)]
    out, cache = F.sdpa_forward(q, k, v, is_causal=True, dropout_p=0.2, rng=seed)
    grads = F.sdpa_backward(upstream(out.shape, dtype=np.float32), cache)
    assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    for a, b in zip((q, k, v), copies):
        np.testing.assert_array_equal(a, b)


def test_dropout_from_seed_is_reproducible():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 4, 3))
    a = F.scaled_dot_product_attention(q, q, q, dropout_p=0.5, rng=7)
    b = F.scaled_dot_product_attention(q, q, q, dropout_p=0.5, rng=7)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(k=np.zeros((4, 2))), ValueError, "query and key must share the head dim E"),
        (dict(v=np.zeros((3, 2))), ValueError, "key and value must have the same number"),
        (
            dict(attn_mask=np.ones((4, 4), bool), is_causal=True),
            ValueError,
            "is_causal=True cannot be combined with attn_mask",
        ),
        (dict(attn_mask=np.ones((3, 4), bool)), ValueError, r"does not broadcast to .*\(2, 4, 4\)"),
        (dict(attn_mask=np.ones((4, 4), int)), TypeError, "attn_mask must be boolean or floating"),
        (dict(dropout_p=1.5), ValueError, r"dropout_p must be in \[0, 1\]"),
        (dict(dropout_p=-0.1), ValueError, r"dropout_p must be in \[0, 1\]"),
        (dict(dropout_p="0.1"), TypeError, r"dropout_p must be a float in \[0, 1\], got '0.1'"),
        (dict(scale="0.5"), TypeError, "scale must be a float or None, got '0.5'"),
        (dict(scale=True), TypeError, "scale must be a float or None"),
        (dict(dropout_mask=np.ones((2, 4, 4), bool)), ValueError, "dropout_mask needs"),
        (dict(q=np.zeros(3)), ValueError, r"query must have shape \(\.\.\., L, E\)"),
    ],
)
def test_bad_input_names_the_argument(kwargs, exc, match):
    args = dict(q=np.zeros((2, 4, 3)), k=np.zeros((2, 4, 3)), v=np.zeros((2, 4, 5)))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        F.sdpa_forward(args.pop("q"), args.pop("k"), args.pop("v"), **args)


def test_gqa_head_counts_must_divide():
    q, k = np.zeros((1, 3, 4, 2)), np.zeros((1, 2, 4, 2))
    with pytest.raises(ValueError, match="enable_gqa needs key and value heads"):
        F.sdpa_forward(q, k, k, enable_gqa=True)


def test_backward_rejects_wrong_dout_shape():
    q = np.zeros((2, 4, 3))
    _, cache = F.sdpa_forward(q, q, q)
    with pytest.raises(ValueError, match=r"dout must have the forward output's shape \(2, 4, 3\)"):
        F.sdpa_backward(np.zeros((2, 4, 2)), cache)


def test_batch_dims_that_do_not_broadcast():
    q, k = np.zeros((2, 4, 3)), np.zeros((3, 4, 3))
    with pytest.raises(ValueError, match=r"batch dims of query \(2,\) and key \(3,\)"):
        F.sdpa_forward(q, k, k)


@given(sdpa_inputs(), seeds)
def test_broadcast_batch_dims_match_torch(qkv, seed):
    """q with batch dims (B, H), k and v shared across B: grads are summed back."""
    q, k, v = qkv
    q2 = np.stack([q, q + 1.0])  # (2, ..., L, E)
    check_against_torch(q2, k, v, seed % 1000, is_causal=True)


@pytest.mark.parametrize(
    "q, k, v, match",
    [
        ((2, 0, 3), (2, 4, 3), (2, 4, 2), r"query needs at least one token .*\(\.\.\., L, E\)"),
        ((2, 4, 3), (2, 0, 3), (2, 0, 2), r"key needs at least one token"),
        ((2, 4, 0), (2, 4, 0), (2, 4, 2), r"query needs at least one token and a head dim >= 1"),
    ],
)
def test_empty_dims_are_refused_by_name(q, k, v, match):
    with pytest.raises(ValueError, match=match):
        F.sdpa_forward(np.zeros(q), np.zeros(k), np.zeros(v))


def test_dropout_mask_errors_name_dropout_mask():
    q = np.zeros((2, 4, 3))
    with pytest.raises(
        ValueError,
        match=r"dropout_mask of shape \(4, 5\) does not broadcast to "
        r"the attention weights of shape \(2, 4, 4\)",
    ):
        F.sdpa_forward(q, q, q, dropout_p=0.5, dropout_mask=np.ones((4, 5), bool))
    with pytest.raises(TypeError, match=r"dropout_mask must be boolean \(a keep-mask"):
        F.sdpa_forward(q, q, q, dropout_p=0.5, dropout_mask=np.ones((4, 4)))


@given(sdpa_inputs(min_batch_dims=1), st.floats(0.05, 0.9), seeds)
def test_dropout_mask_broadcast_from_l_s(qkv, p, seed):
    q, k, v = qkv
    keep = np.random.default_rng(seed).random((q.shape[-2], k.shape[-2])) >= p
    check_against_torch(q, k, v, seed % 1000, dropout_p=p, dropout_mask=keep)


@given(st.data(), sdpa_inputs(gqa=True), seeds)
def test_gqa_with_boolean_mask_and_causal(data, qkv, seed):
    q, k, v = qkv
    shape = q.shape[:-2] + (q.shape[-2], k.shape[-2])
    check_against_torch(
        q, k, v, seed % 1000, enable_gqa=True, attn_mask=data.draw(bool_masks(shape))
    )
    check_against_torch(q, k, v, seed % 1000, enable_gqa=True, is_causal=True)


def test_float32_inputs_with_a_float64_mask_stay_float32():
    q = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    out, cache = F.sdpa_forward(q, q, q, attn_mask=np.zeros((4, 4)))
    assert out.dtype == np.float32
    g = upstream(out.shape, dtype=np.float32)
    assert all(d.dtype == np.float32 for d in F.sdpa_backward(g, cache))


@pytest.mark.parametrize("op", ["sdpa_forward", "causal_sdpa_forward", "flash_attention_forward"])
def test_float16_scores_scaled_before_the_product_do_not_overflow(op):
    """q @ k^T = 65536 overflows float16 (max 65504); (q / 8) @ k^T = 8192 does not."""
    q = np.full((1, 2, 64), 32.0, dtype=np.float16)
    v = np.random.default_rng(0).standard_normal((1, 2, 4)).astype(np.float16)
    out, _ = getattr(F, op)(q, q, v)
    assert out.dtype == np.float16 and np.isfinite(out).all()
