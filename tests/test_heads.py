import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds, small_dims
from tolerances import FD

from npattn import functional as F
from npattn.gradcheck import check_op


@st.composite
def bthe(draw):
    return draw(small_dims), draw(small_dims), draw(small_dims), draw(small_dims)


@given(bthe(), seeds)
def test_split_matches_torch_view_transpose(shape, seed):
    from helpers import n, t

    B, H, T, E = shape
    x = np.random.default_rng(seed).standard_normal((B, T, H * E))
    out, _ = F.split_heads_forward(x, H)
    np.testing.assert_array_equal(out, n(t(x).view(B, T, H, E).transpose(1, 2)))


@given(bthe(), seeds)
def test_merge_inverts_split_and_backward_inverts_forward(shape, seed):
    B, H, T, E = shape
    x = np.random.default_rng(seed).standard_normal((B, T, H * E))
    heads, cs = F.split_heads_forward(x, H)
    merged, cm = F.merge_heads_forward(heads)
    np.testing.assert_array_equal(merged, x)
    np.testing.assert_array_equal(F.split_heads_backward(heads, cs), x)
    np.testing.assert_array_equal(F.merge_heads_backward(merged, cm), heads)


@given(bthe(), seeds)
def test_backward_matches_finite_differences(shape, seed):
    B, H, T, E = shape
    x = np.random.default_rng(seed).standard_normal((B, T, H * E))
    r = check_op(F.split_heads_forward, F.split_heads_backward, {"x": x}, {"num_heads": H}, **FD)
    assert r.passed, r
    h = x.reshape(B, H, T, E)
    r = check_op(F.merge_heads_forward, F.merge_heads_backward, {"x": h}, **FD)
    assert r.passed, r


def test_split_needs_divisible_width():
    with pytest.raises(ValueError, match=r"d_out \(6\) must be divisible by num_heads \(4\)"):
        F.split_heads_forward(np.zeros((1, 2, 6)), 4)
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, d_out\)"):
        F.split_heads_forward(np.zeros((2, 6)), 2)


@given(bthe(), seeds)
def test_split_qkv_gives_views_equal_to_splitting_each_third(shape, seed):
    B, H, T, E = shape
    qkv = np.random.default_rng(seed).standard_normal((B, T, 3 * H * E))
    heads, cache = F.split_qkv_heads_forward(qkv, H)
    for i, h in enumerate(heads):
        third = qkv[..., i * H * E : (i + 1) * H * E]
        np.testing.assert_array_equal(h, F.split_heads_forward(third, H)[0])
        assert np.shares_memory(h, qkv)  # a view: no copy in the forward
    np.testing.assert_array_equal(F.split_qkv_heads_backward(*heads, cache), qkv)


@given(bthe(), seeds)
def test_split_qkv_backward_matches_finite_differences(shape, seed):
    B, H, T, E = shape
    qkv = np.random.default_rng(seed).standard_normal((B, T, 3 * H * E))

    def forward(qkv):
        (q, k, v), cache = F.split_qkv_heads_forward(qkv, H)
        return np.stack([q, k, v]), cache  # (3, B, H, T, E)

    def backward(dout, cache):
        return F.split_qkv_heads_backward(*dout, cache)

    r = check_op(forward, backward, {"qkv": qkv}, seed=seed % 1000, **FD)
    assert r.passed, r


def test_split_qkv_checks_shapes():
    with pytest.raises(ValueError, match=r"divisible by 3 \* num_heads \(2\)"):
        F.split_qkv_heads_forward(np.zeros((1, 2, 8)), 2)
    _, cache = F.split_qkv_heads_forward(np.zeros((1, 2, 12)), 2)
    good = np.zeros((1, 2, 2, 2))
    with pytest.raises(ValueError, match="dkeys"):
        F.split_qkv_heads_backward(good, np.zeros((1, 2, 3, 2)), good, cache)
