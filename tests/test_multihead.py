"""npattn.MultiHeadAttention, on the reference path and the blocked one (one QKV GEMM,
causal_sdpa), against the op chain the chapter spells out (three Linear layers, split heads,
sdpa with the mask buffer), the book's torch class, finite differences and dtype invariants.
Shapes: x (B, T, d_in)."""

import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds
from tolerances import F64, FD

import npattn
from npattn import functional as F
from npattn.gradcheck import check_module

IMPLS = ("reference", "blocked")  # the same keep-mask from the generator; tiled: test_tiled.py


@st.composite
def mha_setups(draw):
    """(module, x): small shapes, with or without qkv_bias and dropout."""
    H, E = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    B, T, d_in = draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    dropout = draw(st.sampled_from([0.0, 0.4]))
    bias, seed, impl = draw(st.booleans()), draw(seeds), draw(st.sampled_from(IMPLS))
    m = npattn.MultiHeadAttention(d_in, H * E, T + 1, dropout, H, bias, rng=seed, attn_impl=impl)
    x = np.random.default_rng(seed + 1).standard_normal((B, T, d_in))
    return m.astype(np.float64), x


def op_chain(m, x, g, rng):
    """The chapter's steps with the general ops: (context_vec, dx, grads) for upstream g."""
    T, sd, grads = x.shape[1], m.state_dict(), {}
    heads, caches = [], []
    for name in ("W_query", "W_key", "W_value"):
        y, c = F.linear_forward(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))
        caches.append(c)
        heads.append(F.split_heads_forward(y, m.num_heads)[0])  # (B, H, T, E)
    mask = m.mask[:T, :T] == 0  # (T, T), True = attend
    ctx, sc = F.sdpa_forward(*heads, attn_mask=mask, dropout_p=m.dropout, rng=rng)
    ctx, mc = F.merge_heads_forward(ctx)  # (B, T, d_out)
    out, oc = F.linear_forward(ctx, sd["out_proj.weight"], sd["out_proj.bias"])
    dctx, grads["out_proj.weight"], grads["out_proj.bias"] = F.linear_backward(g, oc)
    dheads = F.sdpa_backward(F.merge_heads_backward(dctx, mc), sc)
    dx = np.zeros_like(x)
    for name, dh, c in zip(("W_query", "W_key", "W_value"), dheads, caches):
        dy = F.split_heads_backward(dh, ((*x.shape[:2], m.d_out), m.num_heads))
        dxi, grads[f"{name}.weight"], db = F.linear_backward(dy, c)
        if db is not None:
            grads[f"{name}.bias"] = db
        dx += dxi
    return out, dx, grads


def check_against_op_chain(m, x, seed):
    rng_copy = copy.deepcopy(m.rng)  # the op chain draws the same dropout mask
    out = m(x)
    g = np.random.default_rng(seed).standard_normal(out.shape)
    dx = m.backward(g)
    ref_out, ref_dx, ref_grads = op_chain(m, x, g, rng_copy)
    np.testing.assert_allclose(out, ref_out, **F64)
    np.testing.assert_allclose(dx, ref_dx, **F64)
    assert set(m.grads) == set(ref_grads)
    for key, value in ref_grads.items():
        np.testing.assert_allclose(m.grads[key], value, err_msg=key, **F64)


@given(mha_setups(), seeds)
def test_equals_the_op_chain(setup, seed):
    check_against_op_chain(*setup, seed % 1000)


@given(mha_setups(), seeds)
def test_a_loaded_non_causal_buffer_is_applied_as_a_mask(setup, seed):
    m, x = setup
    sd = m.state_dict()
    sd["mask"] = (np.random.default_rng(seed).random(sd["mask"].shape) > 0.5).astype(np.float64)
    m.load_state_dict(sd)
    check_against_op_chain(m, x, seed % 1000)


def test_matches_the_book_over_several_row_blocks():
    """T = 300 spans three of causal_sdpa's 128-row blocks."""
    torch = pytest.importorskip("torch")
    import chapter_ch03 as ch
    from helpers import n, t, upstream

    torch.manual_seed(0)
    book = ch.MultiHeadAttention(4, 6, 300, 0.0, 2, qkv_bias=True).double()
    m = npattn.MultiHeadAttention(4, 6, 300, 0.0, 2, True).astype(np.float64)
    m.load_state_dict(book.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 300, 4))
    g = upstream((2, 300, 6), 1)
    out = m(x)
    dx = m.backward(g)
    tx = t(x, True)
    tout = book(tx)
    tout.backward(t(g))
    np.testing.assert_allclose(out, n(tout), **F64)
    np.testing.assert_allclose(dx, n(tx.grad), **F64)
    for key, p in book.named_parameters():
        np.testing.assert_allclose(m.grads[key], n(p.grad), err_msg=key, **F64)


def test_float32_stays_float32_and_keeps_its_weights():
    m = npattn.MultiHeadAttention(8, 8, 16, 0.0, 2, rng=0)
    x = np.random.default_rng(0).standard_normal((2, 16, 8)).astype(np.float32)
    out = m(x)
    dx = m.backward(np.random.default_rng(1).standard_normal(out.shape).astype(np.float32))
    assert out.dtype == dx.dtype == np.float32
    assert all(v.dtype == np.float32 for v in m.grads.values())
    assert m.attn_weights.shape == (2, 2, 16, 16) and m.attn_weights.dtype == np.float32
    keys = ["mask", "W_query.weight", "W_key.weight", "W_value.weight", "out_proj.weight"]
    assert list(m.state_dict()) == keys + ["out_proj.bias"]  # the chapter's keys, torch order


@pytest.mark.parametrize("bias", [False, True])
def test_gradients_match_finite_differences_with_dropout(bias):
    m = npattn.MultiHeadAttention(3, 4, 5, 0.3, 2, bias, rng=7)
    report = check_module(m, np.random.default_rng(0).standard_normal((2, 5, 3)), seed=3, **FD)
    assert report.passed, report
