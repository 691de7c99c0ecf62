"""The chapter's classes in npattn against the chapter's own torch code (tests/chapter_ch03.py),
float64, forward, dL/dx and every parameter gradient, with a random upstream gradient."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds
from tolerances import F32, F64, FD

import npattn
from npattn.gradcheck import check_module

torch = pytest.importorskip("torch")
import chapter_ch03 as ch  # noqa: E402
from helpers import n, t, upstream  # noqa: E402


@st.composite
def configs(draw):
    """(class name, constructor args, input shape) covering a grid of shapes."""
    name = draw(
        st.sampled_from(
            [
                "SelfAttention_v1",
                "SelfAttention_v2",
                "CausalAttention",
                "MultiHeadAttentionWrapper",
                "MultiHeadAttention",
            ]
        )
    )
    d_in, num_heads, head_dim = (
        draw(st.integers(1, 5)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, 3)),
    )
    context_length = draw(st.integers(1, 6))
    T = draw(st.integers(1, context_length))  # T <= context_length, often below it
    B = draw(st.integers(1, 3))
    qkv_bias = draw(st.booleans())
    if name == "SelfAttention_v1":
        return name, (d_in, head_dim), (T, d_in)
    if name == "SelfAttention_v2":
        return name, (d_in, head_dim, qkv_bias), (T, d_in)
    if name == "CausalAttention":
        return name, (d_in, head_dim, context_length, 0.0, qkv_bias), (B, T, d_in)
    if name == "MultiHeadAttentionWrapper":
        return name, (d_in, head_dim, context_length, 0.0, num_heads, qkv_bias), (B, T, d_in)
    d_out = head_dim * num_heads
    return name, (d_in, d_out, context_length, 0.0, num_heads, qkv_bias), (B, T, d_in)


def pair(name, args, seed, dtype=torch.float64):
    """The chapter's torch module (seeded) and an npattn module loaded with its weights."""
    torch.manual_seed(seed)
    ref = getattr(ch, name)(*args).to(dtype)
    mine = getattr(npattn, name)(*args).astype(torch.empty((), dtype=dtype).numpy().dtype)
    mine.load_state_dict(ref.state_dict())  # values into the module's dtype, as in torch
    return ref, mine


@given(configs(), seeds)
def test_matches_chapter_float64(config, seed):
    name, args, shape = config
    ref, mine = pair(name, args, seed % 10_000)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    y = mine(x)
    g = upstream(y.shape, seed % 1000)
    dx = mine.backward(g)
    tx = t(x, True)
    ty = ref(tx)
    ty.backward(t(g))
    np.testing.assert_allclose(y, n(ty), err_msg="forward", **F64)
    np.testing.assert_allclose(dx, n(tx.grad), err_msg="dx", **F64)
    grads = mine.grads
    assert set(grads) == {k for k, _ in ref.named_parameters()}
    for k, p in ref.named_parameters():
        np.testing.assert_allclose(grads[k], n(p.grad), err_msg=k, **F64)


@given(configs(), seeds)
def test_matches_chapter_float32(config, seed):
    name, args, shape = config
    ref, mine = pair(name, args, seed % 10_000, torch.float32)
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    y = mine(x)
    assert y.dtype == np.float32
    g = upstream(y.shape, seed % 1000, np.float32)
    dx = mine.backward(g)
    assert dx.dtype == np.float32
    tx = t(x, True)
    ref(tx).backward(t(g))
    np.testing.assert_allclose(y, n(ref(tx)), **F32)
    np.testing.assert_allclose(dx, n(tx.grad), **F32)
    grads = mine.grads
    for k, p in ref.named_parameters():
        assert grads[k].dtype == np.float32, k
        np.testing.assert_allclose(grads[k], n(p.grad), err_msg=k, **F32)


@given(configs(), seeds)
def test_state_dict_has_the_chapters_keys_shapes_and_order(config, seed):
    name, args, _ = config
    torch.manual_seed(0)
    ref_sd = getattr(ch, name)(*args).state_dict()
    sd = getattr(npattn, name)(*args, rng=seed).state_dict()
    assert list(sd) == list(ref_sd)
    for k in sd:
        assert sd[k].shape == tuple(ref_sd[k].shape), k
    mine_params = getattr(npattn, name)(*args).parameters()
    assert all(p.dtype == np.float32 for p in mine_params.values())


@given(configs(), seeds)
def test_finite_differences(config, seed):
    name, args, shape = config
    args = tuple(0.3 if isinstance(a, float) else a for a in args)  # dropout on, mask held
    module = getattr(npattn, name)(*args, rng=seed)
    x = np.random.default_rng(seed).standard_normal(shape)
    report = check_module(module, x, seed=seed % 1000, **FD)
    assert report.passed, report


def test_exercise_3_3_parameter_count():
    mha = npattn.MultiHeadAttention(768, 768, 1024, 0.0, 12)
    assert sum(p.size for p in mha.parameters().values()) == 2_360_064


def test_wrapper_d_out_is_per_head_and_mha_d_out_is_total():
    x = np.zeros((2, 6, 3))
    assert npattn.MultiHeadAttentionWrapper(3, 2, 6, 0.0, 2)(x).shape == (2, 6, 4)
    assert npattn.MultiHeadAttention(3, 2, 6, 0.0, 2)(x).shape == (2, 6, 2)
