"""MLA's absorbed form (m.absorbed = True): W_UK folded into the queries and W_UV into
out_proj, attention on the cached latents. Same numbers as the plain form, float64 to 1e-12,
with and without biases, in chunks of any sizes, and with dropout in training mode.
Shapes: x (B, T, d_in); cache_c_kv (B, S_cached, latent_dim)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import chunk_sizes, seeds
from test_kv_cache import EXACT, decode

import npattn

T_MAX = 7


def make(qkv_bias, seed, dropout=0.0):
    m = npattn.MultiHeadLatentAttention(5, 6, dropout, 3, qkv_bias, 4, rng=seed)
    return m.astype(np.float64).eval()


@pytest.mark.parametrize("qkv_bias", [False, True])
@given(data=st.data(), seed=seeds, T=st.integers(1, T_MAX), B=st.integers(1, 2))
def test_absorbed_decoding_equals_the_plain_form_and_the_full_forward(qkv_bias, data, seed, T, B):
    m = make(qkv_bias, seed % 1000)
    x = np.random.default_rng(seed).standard_normal((B, T, 5))
    full = m(x)
    sizes = data.draw(chunk_sizes(T))
    plain = decode(m, x, sizes)
    plain_weights, plain_cache = m.attn_weights, m.cache_c_kv.copy()
    m.reset_cache()
    m.absorbed = True
    absorbed = decode(m, x, sizes)
    np.testing.assert_allclose(absorbed, full, **EXACT)
    np.testing.assert_allclose(absorbed, plain, **EXACT)
    np.testing.assert_allclose(m.attn_weights, plain_weights, **EXACT)
    np.testing.assert_array_equal(m.cache_c_kv, plain_cache)  # the same latents are cached


def test_switching_forms_mid_sequence_reads_the_same_cache():
    m = make(True, 0)
    x = np.random.default_rng(1).standard_normal((2, 6, 5))
    full = m(x)
    outs = []
    for i, absorbed in enumerate([False, True, True, False, True, False]):
        m.absorbed = absorbed
        outs.append(m(x[:, i : i + 1], use_cache=True))
    np.testing.assert_allclose(np.concatenate(outs, axis=1), full, **EXACT)


def test_absorbed_with_dropout_matches_the_plain_form_with_the_same_mask():
    """Dropout scales the weights so a row no longer sums to 1: b_UV then enters times the
    row's kept weight sum, not once."""
    x = np.random.default_rng(2).standard_normal((2, 5, 5))
    outs = {}
    for absorbed in (False, True):
        m = make(True, 3, dropout=0.4).train()
        m.rng = np.random.default_rng(7)
        m.absorbed = absorbed
        outs[absorbed] = (decode(m, x, [2, 1, 2]), m.dropout_mask.copy())
    np.testing.assert_array_equal(outs[True][1], outs[False][1])
    assert not outs[True][1].all()  # some weights were dropped
    np.testing.assert_allclose(outs[True][0], outs[False][0], **EXACT)


def test_absorbed_is_inference_only():
    m = make(False, 0)
    m.absorbed = True
    y = m(np.ones((1, 2, 5)), use_cache=True)
    with pytest.raises(RuntimeError, match="inference only"):
        m.backward(np.ones_like(y))
