"""npattn.fast.dispatch: every attn_impl gives the reference's outputs and gradients, "auto"
follows choose_attn_impl, a bad attn_impl is refused whenever it is set, and the reference
path leaves each Linear child with a working forward, backward and grads of its own."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds
from tolerances import F64

import npattn
from npattn.fast import dispatch

IMPLS = ("reference", "blocked", "tiled", "auto")


def build(cls, impl, dropout, bias, seed):
    if cls is npattn.MultiHeadAttention:
        m = cls(5, 4, 8, dropout, 2, bias, rng=seed, attn_impl=impl)
    else:
        m = cls(5, 3, 8, dropout, bias, rng=seed, attn_impl=impl)
    return m.astype(np.float64)


def run(m, x, g):
    """(output, dx, grads) of one forward and backward."""
    out = m(x)
    return out, m.backward(g), m.grads


def assert_same(a, b):
    (out_a, dx_a, grads_a), (out_b, dx_b, grads_b) = a, b
    np.testing.assert_allclose(out_a, out_b, **F64)
    np.testing.assert_allclose(dx_a, dx_b, **F64)
    assert set(grads_a) == set(grads_b)
    for name, grad in grads_b.items():
        np.testing.assert_allclose(grads_a[name], grad, err_msg=name, **F64)


@pytest.mark.parametrize("cls", [npattn.MultiHeadAttention, npattn.CausalAttention])
@given(T=st.integers(1, 8), B=st.integers(1, 2), bias=st.booleans(), seed=seeds)
def test_every_impl_equals_the_reference_in_eval_mode(cls, T, B, bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, 5))
    g = None
    results = {}
    for impl in IMPLS:
        m = build(cls, impl, 0.3, bias, seed % 1000).eval()
        if g is None:
            g = rng.standard_normal(m(x).shape)
        results[impl] = run(m, x, g)
    for impl in IMPLS[1:]:
        assert_same(results[impl], results["reference"])


@pytest.mark.parametrize("cls", [npattn.MultiHeadAttention, npattn.CausalAttention])
@given(T=st.integers(1, 8), seed=seeds)
def test_blocked_draws_the_references_dropout_mask(cls, T, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, T, 5))
    ref, blocked = (build(cls, impl, 0.4, True, seed % 1000) for impl in ("reference", "blocked"))
    g = rng.standard_normal((2, T, ref.d_out))
    assert_same(run(blocked, x, g), run(ref, x, g))
    np.testing.assert_array_equal(blocked.dropout_mask, ref.dropout_mask)


@pytest.mark.parametrize("impl", IMPLS)
def test_children_own_their_gradients(impl):
    """After mha.backward each projection's grads are its own; on the reference path each
    Linear also ran its own forward, so its own backward works too."""
    rng = np.random.default_rng(0)
    m = build(npattn.MultiHeadAttention, impl, 0.0, True, 1)
    x = rng.standard_normal((2, 6, 5))
    m.backward(rng.standard_normal(m(x).shape))
    for name in ("W_query", "W_key", "W_value", "out_proj"):
        child = getattr(m, name)
        assert set(child.grads) == {"weight", "bias"}
        for key, grad in child.grads.items():
            np.testing.assert_array_equal(m.grads[f"{name}.{key}"], grad)
    if impl == "reference":
        dq = rng.standard_normal((2, 6, 4))
        dx = m.W_query.backward(dq)  # the child's own backward, on its own last input
        np.testing.assert_allclose(dx, dq @ m.W_query.weight, **F64)
        np.testing.assert_allclose(
            m.W_query.grads["weight"], dq.reshape(-1, 4).T @ x.reshape(-1, 5), **F64
        )


def test_default_is_the_reference():
    for m in (
        npattn.MultiHeadAttention(5, 4, 8, 0.0, 2),
        npattn.CausalAttention(5, 3, 8, 0.0),
        npattn.SelfAttention_v2(5, 3),
    ):
        assert m.attn_impl == "reference"


@pytest.mark.parametrize("bad", ["naive", "flash", None, 3])
def test_a_bad_attn_impl_is_refused_in_the_constructor_and_after(bad):
    with pytest.raises(ValueError, match="attn_impl must be one of"):
        npattn.MultiHeadAttention(4, 4, 8, 0.0, 2, attn_impl=bad)
    for m in (npattn.MultiHeadAttention(4, 4, 8, 0.0, 2), npattn.CausalAttention(4, 4, 8, 0.0)):
        with pytest.raises(ValueError, match="attn_impl must be one of"):
            m.attn_impl = bad
        assert m.attn_impl == "reference"  # left as it was


def test_choose_attn_impl_rule():
    choose = dispatch.choose_attn_impl
    T0 = dispatch.AUTO_TILED_MIN_TOKENS
    assert choose(T0 - 1, 1) == "blocked"
    assert choose(T0, 1) == "tiled"
    assert choose(T0, 1000) == "tiled"  # many heads: tiled too
    assert choose(T0 - 1, 1000) == "tiled"  # (B, H, T, T) weights above AUTO_MAX_WEIGHTS
    assert dispatch.AUTO_MAX_WEIGHTS < 1000 * (T0 - 1) ** 2


def test_auto_runs_what_choose_attn_impl_picks(monkeypatch):
    picks = []

    def fake_choose(T, batch_heads, threads=None):
        picks.append((T, batch_heads))
        return "tiled"

    monkeypatch.setattr(dispatch, "choose_attn_impl", fake_choose)
    m = build(npattn.MultiHeadAttention, "auto", 0.0, False, 0)
    m(np.zeros((3, 5, 5)))
    assert picks == [(5, 3 * 2)] and m.attn_weights is None  # tiled keeps no weights


def test_set_grads_checks_shapes_and_bias():
    layer = npattn.Linear(3, 2, bias=False)
    with pytest.raises(ValueError, match=r"weight must have .*\(2, 3\)"):
        layer.set_grads(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="bias gradient"):
        layer.set_grads(np.zeros((2, 3)), np.zeros(2))
    layer.set_grads(np.ones((2, 3)))
    assert set(layer.grads) == {"weight"}


def test_fast_path_casts_out_projs_input_like_linear_and_forgets_the_childrens_forwards():
    """A float32 out_proj in a float64 module: the fast paths cast its input to float32, as
    Linear.forward does on the reference path; and after a fast forward, a projection's own
    backward raises (it did not compute this forward) instead of using an older input."""
    x = np.random.default_rng(0).standard_normal((2, 5, 6))
    g = np.random.default_rng(1).standard_normal((2, 5, 8))
    outs = {}
    for impl in ("reference", "blocked", "tiled"):
        m = npattn.MultiHeadAttention(6, 8, 8, 0.0, 2, rng=1).astype(np.float64)
        m.out_proj.astype(np.float32)
        m(x)  # the reference path: every child runs its own forward
        m.attn_impl = impl
        outs[impl] = m(x)
        m.backward(g)
        if impl != "reference":
            for name in ("W_query", "W_key", "W_value", "out_proj"):
                with pytest.raises(RuntimeError, match="before forward"):
                    getattr(m, name).backward(np.ones((2, 5, 8)))
    for impl in ("blocked", "tiled"):
        assert outs[impl].dtype == outs["reference"].dtype == np.float32
        np.testing.assert_allclose(outs[impl], outs["reference"], rtol=1e-6, atol=1e-6)
