"""KV-cache decoding of the modern classes and the chapter's MultiHeadAttention: chunked
forwards with use_cache=True, joined, equal the full forward (float64, 1e-12); the cache holds
only what it must; errors leave the cache as it was. Shapes: x (B, T, d_in); cache_k /
cache_v (B, H_kv, S_cached, E), cache_c_kv (B, S_cached, latent_dim)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import chunk_sizes, seeds

import npattn

EXACT = dict(rtol=1e-12, atol=1e-12)
T_MAX = 7


def make(name, seed=0, window=3, dtype=np.float64, **extra):
    """A small module of each class, in eval mode."""
    args, kw = {
        "MultiHeadAttention": ((5, 6, T_MAX, 0.1, 2, True), extra),
        "GroupedQueryAttention": ((5, 8, 0.1, 4, 2, True), {}),
        "MultiHeadLatentAttention": ((5, 6, 0.1, 2, True, 3), {}),
        "MultiHeadAttentionWithSWA": ((5, 6, 0.1, 2, True, window), {}),
        "Qwen3Attention": ((5, 2, 1, 4), {"context_length": T_MAX}),
    }[name]
    m = getattr(npattn, name)(*args, **kw, rng=seed)
    if name == "Qwen3Attention":
        sd = m.state_dict()
        sd["q_norm.scale"] = np.linspace(0.5, 2.0, 4)
        m.load_state_dict(sd)
    return m.astype(dtype).eval()


CLASSES = ("GroupedQueryAttention", "MultiHeadLatentAttention", "MultiHeadAttentionWithSWA",
           "Qwen3Attention", "MultiHeadAttention")  # fmt: skip
WITH_CONTEXT_LENGTH = ("Qwen3Attention", "MultiHeadAttention")


def decode(m, x, sizes):
    outs, start = [], 0
    for s in sizes:
        outs.append(m(x[:, start : start + s], use_cache=True))
        start += s
    return np.concatenate(outs, axis=1)


@pytest.mark.parametrize("name", CLASSES)
@given(data=st.data(), seed=seeds, T=st.integers(1, T_MAX), B=st.integers(1, 2))
def test_chunked_decoding_equals_the_full_forward(name, data, seed, T, B):
    window = data.draw(st.sampled_from([None, 1, 2, 3, T_MAX])) if "SWA" in name else None
    m = make(name, seed % 1000, window)
    x = np.random.default_rng(seed).standard_normal((B, T, 5))
    full = m(x)
    sizes = data.draw(chunk_sizes(T))
    np.testing.assert_allclose(decode(m, x, sizes), full, **EXACT)
    assert m.ptr_current_pos == T
    np.testing.assert_array_equal(m(x), full)  # a full forward empties the cache again
    assert m.ptr_current_pos == 0 and m.cache_nbytes == 0


def test_swa_window_chunks_attend_to_at_most_w_plus_n_minus_1_keys():
    m = make("MultiHeadAttentionWithSWA", window=3)
    x = np.random.default_rng(0).standard_normal((1, 12, 5))
    seen = 0
    for n in (4, 1, 2, 5):
        m(x[:, seen : seen + n], use_cache=True)
        seen += n
        assert m.attn_weights.shape[-1] == min(seen, 3 + n - 1)
        assert m.cache_k.shape == (1, 2, min(seen, 3), 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cache_bytes_after_n_tokens(dtype):
    """GQA: G heads, not H; MLA: latent_dim numbers per token; SWA: at most W positions."""
    B, N, item = 2, 6, np.dtype(dtype).itemsize
    x = np.random.default_rng(0).standard_normal((B, N, 5))
    expected = {
        "GroupedQueryAttention": 2 * B * 2 * N * 2 * item,  # k and v, G = 2 heads of E = 2
        "MultiHeadLatentAttention": B * N * 3 * item,  # latent_dim = 3
        "MultiHeadAttentionWithSWA": 2 * B * 2 * 3 * 3 * item,  # H = 2, W = 3 positions, E = 3
        "Qwen3Attention": 2 * B * 1 * N * 4 * item,  # G = 1 head of E = 4
        "MultiHeadAttention": 2 * B * 2 * N * 3 * item,  # H = 2 heads of E = 3
    }
    for name, nbytes in expected.items():
        m = make(name, dtype=dtype)
        assert m.cache_nbytes == 0
        for i in range(N):
            m(x[:, i : i + 1], use_cache=True)
        assert m.cache_nbytes == nbytes, name
        assert all(getattr(m, k).dtype == dtype for k in m._kv_names)
        m.reset_cache()
        assert m.cache_nbytes == 0 and m.ptr_current_pos == 0


def snapshot(m):
    return m.ptr_current_pos, [None if getattr(m, k) is None else getattr(m, k).copy()
                               for k in m._kv_names]  # fmt: skip


def assert_unchanged(m, before):
    ptr, arrays = snapshot(m)
    assert ptr == before[0]
    for a, b in zip(arrays, before[1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", CLASSES)
def test_errors_leave_the_cache_unchanged(name):
    m = make(name)
    x = np.random.default_rng(0).standard_normal((2, 3, 5))
    m(x, use_cache=True)
    before = snapshot(m)
    with pytest.raises(ValueError, match="batch size"):
        m(x[:1, :1], use_cache=True)
    assert_unchanged(m, before)
    if name != "MultiHeadAttention":  # the chapter's class takes no key_padding_mask
        # the mask must cover the 3 cached tokens and the new one: (2, 4), not (2, 3)
        with pytest.raises(ValueError, match="key_padding_mask"):
            m(x[:, :1], use_cache=True, key_padding_mask=np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="d_in"):
        m(x[:, :1, :4], use_cache=True)
    with pytest.raises(TypeError, match="use_cache"):
        m(x[:, :1], use_cache="yes")
    assert_unchanged(m, before)
    with pytest.raises(RuntimeError, match="inference only"):
        m.backward(np.ones(m(x[:, :1], use_cache=True).shape))


@pytest.mark.parametrize("name", WITH_CONTEXT_LENGTH)
def test_past_context_length_raises_and_keeps_the_cache(name):
    m = make(name)
    x = np.random.default_rng(0).standard_normal((1, T_MAX + 1, 5))
    with pytest.raises(ValueError, match=f"context_length(=| is ){T_MAX}"):
        m(x)
    m(x[:, :5], use_cache=True)
    before = snapshot(m)
    with pytest.raises(ValueError, match=f"context_length={T_MAX}"):
        m(x[:, :3], use_cache=True)
    assert_unchanged(m, before)
    m(x[:, :2], use_cache=True)  # exactly up to context_length is fine
    assert m.ptr_current_pos == T_MAX


def test_gqa_cross_attention_has_no_cache_and_new_weights_stop_decoding_until_a_reset():
    m = make("GroupedQueryAttention")
    x = np.random.default_rng(0).standard_normal((1, 3, 5))
    with pytest.raises(ValueError, match="x_kv"):
        m(x, use_cache=True, x_kv=x)
    m(x, use_cache=True)
    held = m.cache_nbytes
    m.load_state_dict(m.state_dict())  # nothing empties the cache behind the caller's back
    assert m.cache_nbytes == held and m.ptr_current_pos == 3
    with pytest.raises(RuntimeError, match="reset_cache"):
        m(x[:, :1], use_cache=True)
    assert m.cache_nbytes == held and m.ptr_current_pos == 3
    with pytest.raises(RuntimeError, match="inference only"):
        m.backward(np.ones((1, 3, 8)))
    m.reset_cache()
    assert m(x[:, :1], use_cache=True).shape == (1, 1, 8) and m.ptr_current_pos == 1


@given(
    seed=seeds,
    G=st.integers(1, 3),
    n=st.integers(1, 3),
    T=st.integers(1, 4),
    extra=st.integers(0, 4),
    p=st.sampled_from([0.0, 0.5]),
)
def test_cached_attention_equals_sdpa_with_gqa(seed, G, n, T, extra, p):
    """The cache path's forward-only attention: the reference SDPA's numbers, its dropout
    mask drawn from the same seed, each key/value head read by its group in place."""
    from npattn.fast.grouped import grouped_attention
    from npattn.modules._kv import attention_mask
    from npattn.ops.sdpa import sdpa_forward

    rng = np.random.default_rng(seed)
    B, E, S = 2, 3, T + extra
    q = rng.standard_normal((B, G * n, T, E))
    k, v = rng.standard_normal((2, B, G, S, E))
    mask = attention_mask(extra, T, 0, S, window=None if seed % 2 else 2)  # chunk after extra
    out, weights, keep = grouped_attention(q, k, v, mask, dropout_p=p, rng=np.random.default_rng(1))
    ref, cache = sdpa_forward(q, k, v, mask, p, enable_gqa=True, rng=np.random.default_rng(1))
    np.testing.assert_allclose(out, ref, **EXACT)
    np.testing.assert_allclose(weights, cache.attn_weights, **EXACT)
    np.testing.assert_array_equal(keep, cache.keep)


@pytest.mark.parametrize("attn_impl", ["blocked", "tiled", "auto"])
def test_multihead_cached_path_is_the_reference_whatever_attn_impl(attn_impl):
    """The cached calls run the reference ops; the full forward (attn_impl's path) empties the
    cache and keeps its backward."""
    m = make("MultiHeadAttention", attn_impl=attn_impl)
    x = np.random.default_rng(1).standard_normal((2, T_MAX, 5))
    full = m(x)
    np.testing.assert_allclose(decode(m, x, [2, 1, 4]), full, **EXACT)
    m(x)
    assert m.cache_nbytes == 0
    assert m.backward(np.random.default_rng(2).standard_normal(full.shape)).shape == x.shape


def test_multihead_cached_dropout_draws_the_full_forwards_mask():
    """Training mode: a first cached chunk draws, from the same seed, the keep-mask the full
    forward draws, so both give the same output."""
    x = np.random.default_rng(3).standard_normal((2, 4, 5))
    full, cached = make("MultiHeadAttention", seed=7).train(), make("MultiHeadAttention", seed=7)
    y = full(x)
    y_cached = cached.train()(x, use_cache=True)
    np.testing.assert_allclose(y_cached, y, **EXACT)
    np.testing.assert_array_equal(cached.dropout_mask, full.dropout_mask)
    assert cached.dropout_mask.shape == (2, 2, 4, 4) and not cached.dropout_mask.all()
