"""The modern attention classes (GroupedQueryAttention, MultiHeadLatentAttention,
MultiHeadAttentionWithSWA, Qwen3Attention) against plain torch code in float64 (output, dx,
every parameter gradient, with dropout, key padding and cross-attention), finite
differences, and invariants. Shapes: x (B, T, d_in) -> (B, T, d_out or d_in)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds
from tolerances import F64

import npattn
from npattn.gradcheck import check_module

torch = pytest.importorskip("torch")
import modern_torch as R  # noqa: E402
from helpers import n, t, upstream  # noqa: E402

CLASSES = ("GroupedQueryAttention", "MultiHeadLatentAttention", "MultiHeadAttentionWithSWA",
           "Qwen3Attention")  # fmt: skip


@st.composite
def configs(draw, name, dropout=True):
    """A small module of class `name` (float64, random weights), its input and what the torch
    reference needs."""
    H = draw(st.integers(1, 4))
    G = draw(st.sampled_from([g for g in range(1, H + 1) if H % g == 0]))
    T, B = draw(st.integers(1, 5)), draw(st.integers(1, 2))
    d_in, bias, seed = draw(st.integers(1, 6)), draw(st.booleans()), draw(seeds)
    p = draw(st.sampled_from([0.0, 0.3])) if dropout else 0.0
    E = draw(st.integers(1, 3))
    kw, ref = {}, {}
    if name == "GroupedQueryAttention":
        m = npattn.GroupedQueryAttention(d_in, H * E, p, H, G, bias, rng=seed)
        ref = dict(num_heads=H, num_kv_groups=G)
    elif name == "MultiHeadAttentionWithSWA":
        window = draw(st.one_of(st.none(), st.integers(1, T + 2)))
        m = npattn.MultiHeadAttentionWithSWA(d_in, H * E, p, H, bias, window, rng=seed)
        ref = dict(num_heads=H)
        kw = dict(window=window)
    elif name == "MultiHeadLatentAttention":
        latent = draw(st.one_of(st.none(), st.integers(1, 5)))
        m = npattn.MultiHeadLatentAttention(d_in, H * E, p, H, bias, latent, rng=seed)
        ref = dict(num_heads=H)
    else:
        E = 2 * E  # RoPE needs an even head dim
        qk_norm = draw(st.booleans())
        base = draw(st.sampled_from([10_000.0, 1_000_000.0, 500_000.0]))
        m = npattn.Qwen3Attention(d_in, H, G, E, qk_norm, rope_base=base, context_length=T + 2,
                                  rng=seed)  # fmt: skip
        ref = dict(num_heads=H, num_kv_groups=G, rope=(E, base))
    rng = np.random.default_rng(seed)
    m.astype(np.float64)  # load_state_dict keeps the module's dtype, as torch's does
    m.load_state_dict({k: rng.standard_normal(v.shape) for k, v in m.state_dict().items()})
    x = rng.standard_normal((B, T, d_in))
    return m, x, ref, kw


def torch_reference(name, m, x, ref, kw, mask, x_kv=None):
    """Output and gradients of the plain torch code with m's weights and dropout mask."""
    P = R.params(m.state_dict())
    tx = t(x, True)
    keep, p = m.dropout_mask, (m.dropout if m.training and getattr(m, "dropout", 0) else 0.0)
    if name == "GroupedQueryAttention":
        tkv = None if x_kv is None else t(x_kv, True)
        y = R.gqa(P, tx, ref["num_heads"], ref["num_kv_groups"], mask, keep, p, tkv)
    elif name == "MultiHeadAttentionWithSWA":
        y = R.swa(P, tx, ref["num_heads"], mask, keep, p)
    elif name == "MultiHeadLatentAttention":
        y = R.mla(P, tx, ref["num_heads"], mask, keep, p)
    else:
        cos, sin = R.rope_params(*ref["rope"], x.shape[1])
        y = R.qwen3(P, tx, ref["num_heads"], ref["num_kv_groups"], mask, cos, sin)
    g = upstream(tuple(y.shape), int(abs(x).sum() * 1000) % 1000)
    y.backward(t(g))
    grads = {k: n(v.grad) for k, v in P.items()}
    dx = n(tx.grad) if x_kv is None else (n(tx.grad), n(tkv.grad))
    return n(y), dx, grads, g


def assert_agrees(m, y, ref_out, ref_dx, ref_grads, g):
    dx = m.backward(g)
    np.testing.assert_allclose(y, ref_out, err_msg="out", **F64)
    dx, ref_dx = (d if isinstance(d, tuple) else (d,) for d in (dx, ref_dx))
    for i, (a, b) in enumerate(zip(dx, ref_dx)):
        np.testing.assert_allclose(a, b, err_msg=f"dx[{i}]", **F64)
    assert set(m.grads) == set(ref_grads)
    for k, v in ref_grads.items():
        np.testing.assert_allclose(m.grads[k], v, err_msg=k, **F64)


@pytest.mark.parametrize("name", CLASSES)
@given(data=st.data(), padded=st.booleans())
def test_matches_torch_float64(name, data, padded):
    m, x, ref, kw = data.draw(configs(name))
    B, T = x.shape[:2]
    lengths = data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B)) if padded else None
    kpm = None if lengths is None else np.arange(T)[None, :] < np.array(lengths)[:, None]
    y = m(x, key_padding_mask=kpm)
    mask = R.causal_window_mask(T, T, kw.get("window"), lengths)
    ref_out, ref_dx, ref_grads, g = torch_reference(name, m, x, ref, kw, mask)
    assert_agrees(m, y, ref_out, ref_dx, ref_grads, g)
    if m.attn_weights is not None and lengths is not None:
        empty = np.array(lengths) == 0  # padded sequences with no real key attend to nothing
        assert np.all(m.attn_weights[empty] == 0)


@given(data=st.data(), S=st.integers(1, 5), padded=st.booleans())
def test_gqa_cross_attention_matches_torch(data, S, padded):
    m, x, ref, kw = data.draw(configs("GroupedQueryAttention"))
    B = x.shape[0]
    x_kv = np.random.default_rng(S).standard_normal((B, S, m.d_in))
    lengths = data.draw(st.lists(st.integers(0, S), min_size=B, max_size=B)) if padded else None
    kpm = None if lengths is None else np.arange(S)[None, :] < np.array(lengths)[:, None]
    y = m(x, x_kv=x_kv, key_padding_mask=kpm)
    mask = None if kpm is None else kpm[:, None, None, :]  # not causal
    assert_agrees(m, y, *torch_reference("GroupedQueryAttention", m, x, ref, kw, mask, x_kv))


def small(name, seed=0):
    """A fixed small module with dropout and biases where the class has them."""
    args = {
        "GroupedQueryAttention": (5, 8, 0.25, 4, 2, True),
        "MultiHeadLatentAttention": (5, 6, 0.25, 2, True, 3),
        "MultiHeadAttentionWithSWA": (5, 6, 0.25, 2, True, 2),
        "Qwen3Attention": (5, 2, 1, 4),
    }[name]
    return getattr(npattn, name)(*args, rng=seed)


@pytest.mark.parametrize("name", CLASSES)
def test_finite_differences(name):
    m = small(name)
    if name == "Qwen3Attention":  # RMSNorm scales start at ones: make them matter
        sd = m.state_dict()
        sd["q_norm.scale"] = np.linspace(0.5, 2.0, 4)
        sd["k_norm.scale"] = np.linspace(-1.0, 1.5, 4)
        m.load_state_dict(sd)
    report = check_module(m, np.random.default_rng(1).standard_normal((2, 4, 5)))
    assert report.passed, report


@pytest.mark.parametrize("name", CLASSES)
@given(seed=seeds, t0=st.integers(0, 3))
def test_causal_future_tokens_do_not_change_the_past(name, seed, t0):
    m = small(name, seed % 100).eval()
    x = np.random.default_rng(seed).standard_normal((2, 5, 5))
    y = m(x)
    x2 = x.copy()
    x2[:, t0 + 1 :] = np.random.default_rng(seed + 1).standard_normal(x2[:, t0 + 1 :].shape)
    np.testing.assert_array_equal(m(x2)[:, : t0 + 1], y[:, : t0 + 1])
    np.testing.assert_allclose(m.attn_weights.sum(-1), 1.0, rtol=1e-6)


@given(seed=seeds, heads=st.sampled_from([1, 2, 4]), bias=st.booleans())
def test_gqa_with_one_group_per_head_is_mha(seed, heads, bias):
    gqa = npattn.GroupedQueryAttention(5, 2 * heads, 0.0, heads, heads, bias, rng=seed)
    gqa.astype(np.float64)
    d_out = gqa.d_out
    mha = npattn.MultiHeadAttention(5, d_out, 6, 0.0, heads, bias).astype(np.float64)
    sd = dict(gqa.state_dict(), **{"out_proj.bias": np.zeros(d_out), "mask": mha.mask})
    mha.load_state_dict(sd)
    x = np.random.default_rng(seed).standard_normal((2, 6, 5))
    np.testing.assert_allclose(gqa(x), mha(x), rtol=1e-12, atol=1e-12)
    g = upstream((2, 6, d_out), seed % 1000)
    np.testing.assert_allclose(gqa.backward(g), mha.backward(g), rtol=1e-12, atol=1e-12)
    for k, v in gqa.grads.items():
        np.testing.assert_allclose(v, mha.grads[k], rtol=1e-12, atol=1e-12, err_msg=k)


@given(seed=seeds, T=st.integers(1, 6), extra=st.integers(0, 3), bias=st.booleans())
def test_swa_with_window_at_least_t_is_causal_mha(seed, T, extra, bias):
    swa = npattn.MultiHeadAttentionWithSWA(5, 4, 0.0, 2, bias, T + extra, rng=seed)
    mha = npattn.MultiHeadAttention(5, 4, 6, 0.0, 2, bias)
    mha.load_state_dict(dict(swa.state_dict(), mask=mha.mask))
    x = np.random.default_rng(seed).standard_normal((2, T, 5)).astype(np.float32)
    np.testing.assert_allclose(swa(x), mha(x), rtol=1e-5, atol=1e-6)


def test_swa_window_one_attends_only_to_itself():
    m = npattn.MultiHeadAttentionWithSWA(3, 4, 0.0, 2, sliding_window_size=1, rng=0)
    m(np.random.default_rng(0).standard_normal((1, 4, 3)))
    np.testing.assert_array_equal(m.attn_weights, np.broadcast_to(np.eye(4), (1, 2, 4, 4)))


def test_keys_defaults_and_dtype():
    gqa = npattn.GroupedQueryAttention(6, 8, 0.0, 4, 2, qkv_bias=True, rng=0)
    assert list(gqa.state_dict()) == ["W_key.weight", "W_key.bias", "W_value.weight",
        "W_value.bias", "W_query.weight", "W_query.bias", "out_proj.weight"]  # fmt: skip
    assert gqa.W_key.weight.shape == (4, 6) and gqa.dtype == np.float32
    mla = npattn.MultiHeadLatentAttention(6, 8, 0.0, 2)
    assert mla.latent_dim == 16 and list(mla.state_dict())[-2:] == [
        "out_proj.weight",
        "out_proj.bias",
    ]
    swa = npattn.MultiHeadAttentionWithSWA(6, 8, 0.0, 2)
    mha_keys = list(npattn.MultiHeadAttention(6, 8, 4, 0.0, 2).state_dict())
    assert list(swa.state_dict()) == [k for k in mha_keys if k != "mask"]
    q = npattn.Qwen3Attention(8, 2, 1)
    assert q.head_dim == 4 and list(q.state_dict()) == ["W_query.weight", "W_key.weight",
        "W_value.weight", "out_proj.weight", "q_norm.scale", "k_norm.scale"]  # fmt: skip
    assert q.out_proj.weight.shape == (8, 8) and q.cos.shape == (4096, 4)
    assert "q_norm.scale" not in npattn.Qwen3Attention(8, 2, 1, qk_norm=False).state_dict()
    y = q(np.ones((1, 3, 8)))
    assert y.dtype == np.float32 and q.astype(np.float64)(np.ones((1, 3, 8))).dtype == np.float64
    cfg = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_context_length=8)
    q31 = npattn.Qwen3Attention(8, 2, 1, qk_norm=False, rope_base=500_000.0,
                                context_length=16, rope_freq_config=cfg)  # fmt: skip
    np.testing.assert_array_equal(
        q31.cos, npattn.functional.compute_rope_params(4, 500_000.0, 16, cfg)[0]
    )


def test_constructor_errors():
    with pytest.raises(ValueError, match="num_kv_groups"):
        npattn.GroupedQueryAttention(4, 8, 0.0, 4, 3)
    with pytest.raises(ValueError, match="num_heads"):
        npattn.MultiHeadLatentAttention(4, 7, 0.0, 2)
    with pytest.raises(ValueError, match="sliding_window_size"):
        npattn.MultiHeadAttentionWithSWA(4, 8, 0.0, 2, sliding_window_size=0)
    with pytest.raises(ValueError, match="even"):
        npattn.Qwen3Attention(6, 2, 1)  # head_dim 3
    with pytest.raises(ValueError, match="key_padding_mask"):
        npattn.GroupedQueryAttention(4, 4, 0.0, 2, 1)(
            np.ones((2, 3, 4)), key_padding_mask=np.ones((2, 2), bool)
        )
    with pytest.raises(ValueError, match="x_kv"):
        npattn.GroupedQueryAttention(4, 4, 0.0, 2, 1)(np.ones((2, 3, 4)), x_kv=np.ones((1, 3, 4)))
