"""The sliding-window, position and key-padding masks (npattn.ops.masks), and SDPA with a
padding mask and L != S (cross-attention) against torch. True = attend."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, seeds
from tolerances import F64

from npattn import functional as F

torch = pytest.importorskip("torch")
from helpers import torch_sdpa_math, upstream  # noqa: E402

sides = st.integers(1, 7)


@given(sides, st.one_of(st.none(), sides), st.integers(1, 9))
def test_sliding_window_mask_is_its_definition(L, S, window):
    mask = F.sliding_window_mask(L, S, window=window)
    S = L if S is None else S
    expected = [[0 <= i - j < window for j in range(S)] for i in range(L)]
    np.testing.assert_array_equal(mask, np.array(expected, dtype=bool).reshape(L, S))


@given(sides, sides)
def test_window_at_least_l_is_causal_and_window_one_is_the_diagonal(L, S):
    causal = F.causal_mask(L, S)
    np.testing.assert_array_equal(F.sliding_window_mask(L, S, window=L), causal)
    np.testing.assert_array_equal(F.sliding_window_mask(L, S, window=None), causal)
    np.testing.assert_array_equal(F.sliding_window_mask(L, S, window=1), np.eye(L, S, dtype=bool))


@given(st.integers(0, 6), sides, st.integers(0, 6), sides, st.one_of(st.none(), sides))
def test_position_mask_shifts_the_top_left_mask(q0, L, k0, S, window):
    """Shifting queries and keys by the same amount changes nothing: only i - j counts."""
    got = F.position_mask(np.arange(q0, q0 + L), np.arange(k0, k0 + S), window=window)
    big = F.sliding_window_mask(q0 + L, k0 + S, window=window or (q0 + L + k0 + S))
    np.testing.assert_array_equal(got, big[q0:, k0:])


@given(st.lists(st.integers(0, 5), min_size=1, max_size=4))
def test_key_padding_mask_from_lengths(lengths):
    kpm = F.key_padding_mask(lengths, 5)
    assert kpm.shape == (len(lengths), 5) and kpm.dtype == np.bool_
    np.testing.assert_array_equal(kpm.sum(-1), lengths)
    for b, n in enumerate(lengths):
        assert kpm[b, :n].all() and not kpm[b, n:].any()


@given(
    arrays(st.tuples(st.integers(1, 3), st.just(2), sides, st.just(3))),
    st.integers(1, 6),
    st.data(),
    seeds,
)
def test_padding_mask_cross_attention_matches_torch(q, S, data, seed):
    """L != S, keys from another sequence, padded keys masked; a sequence with no real key
    gives 0 (and no NaN) in both."""
    B = q.shape[0]
    rng = np.random.default_rng(seed)
    k, v = rng.standard_normal((B, 2, S, 3)), rng.standard_normal((B, 2, S, 4))
    lengths = data.draw(st.lists(st.integers(0, S), min_size=B, max_size=B))
    mask = F.key_padding_mask(lengths, S)[:, None, None, :]  # (B, 1, 1, S)
    out, cache = F.sdpa_forward(q, k, v, mask)
    g = upstream(out.shape, seed % 1000)
    got = (out, *F.sdpa_backward(g, cache))
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, torch_sdpa_math(q, k, v, g, mask)):
        np.testing.assert_allclose(a, b, err_msg=name, **F64)
    for b, n in enumerate(lengths):
        if n == 0:
            assert np.all(out[b] == 0)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="window"):
        F.sliding_window_mask(3, window=0)
    with pytest.raises(TypeError, match="window"):
        F.sliding_window_mask(3, window=2.5)
    with pytest.raises(ValueError, match="lengths"):
        F.key_padding_mask([1, 6], 5)
    with pytest.raises(ValueError, match="lengths"):
        F.key_padding_mask([[1]], 5)
