"""RoPE (npattn.ops.rope): torch autograd, finite differences, and the properties that make
it a rotation: relative positions, the two layouts, the backward as the rotation by -theta.
Shapes: x (..., T, E), cos / sin (context_length, E)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, batch_shapes, seeds
from tolerances import F64, FD

import npattn
from npattn import functional as F
from npattn.gradcheck import check_op

torch = pytest.importorskip("torch")
import modern_torch as R  # noqa: E402
from helpers import n, t, upstream  # noqa: E402

even_dims = st.integers(1, 4).map(lambda h: 2 * h)
LLAMA31 = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_context_length=8)


@st.composite
def rope_inputs(draw):
    E, T = draw(even_dims), draw(st.integers(1, 5))
    x = draw(arrays(draw(batch_shapes(0, 2)) + (T, E)))
    offset = draw(st.integers(0, 4))
    return x, offset


@given(rope_inputs(), seeds, st.booleans(), st.sampled_from([10_000.0, 7.0]), st.booleans())
def test_forward_backward_match_torch(inputs, seed, interleaved, base, scaled):
    x, offset = inputs
    T, E = x.shape[-2:]
    cos, sin = F.compute_rope_params(E, base, 10, LLAMA31 if scaled else None)
    out, cache = F.rope_forward(x, cos, sin, offset, interleaved=interleaved)
    g = upstream(out.shape, seed % 1000)
    dx = F.rope_backward(g, cache)
    tx = t(x, True)
    c, s = t(cos[offset : offset + T]), t(sin[offset : offset + T])
    ref = (R.rope_interleaved if interleaved else R.rope)(tx, c, s)
    ref.backward(t(g))
    np.testing.assert_allclose(out, n(ref), err_msg="out", **F64)
    np.testing.assert_allclose(dx, n(tx.grad), err_msg="dx", **F64)


@pytest.mark.parametrize("interleaved", [False, True])
def test_finite_differences(interleaved):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 6))
    cos, sin = F.compute_rope_params(6, context_length=9)
    kw = {"cos": cos, "sin": sin, "offset": 3, "interleaved": interleaved}
    report = check_op(F.rope_forward, F.rope_backward, {"x": x}, kw, **FD)
    assert report.passed, report


def test_table_is_position_times_inverse_frequency():
    E, base = 6, 500.0
    cos, sin = F.compute_rope_params(E, base, 7)
    for p in range(7):
        for i in range(E):
            angle = p * base ** (-2 * (i % (E // 2)) / E)
            assert cos[p, i] == pytest.approx(np.cos(angle), abs=1e-15)
            assert sin[p, i] == pytest.approx(np.sin(angle), abs=1e-15)


@given(st.integers(0, 6), st.integers(0, 6), st.integers(0, 5), seeds, st.booleans())
def test_scores_depend_only_on_relative_position(i, j, shift, seed, interleaved):
    """rope(q at i) . rope(k at j) == rope(q at i + shift) . rope(k at j + shift)."""
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((1, 4)), rng.standard_normal((1, 4))
    cos, sin = F.compute_rope_params(4, 10.0, 16)

    def score(a, b):
        qa = F.rope_forward(q, cos, sin, a, interleaved=interleaved)[0]
        kb = F.rope_forward(k, cos, sin, b, interleaved=interleaved)[0]
        return float(np.sum(qa * kb))

    assert score(i, j) == pytest.approx(score(i + shift, j + shift), rel=1e-12, abs=1e-12)


@given(arrays(st.tuples(st.integers(1, 3), even_dims)), st.integers(0, 5))
def test_layouts_are_the_same_rotation_up_to_a_permutation(x, offset):
    """Interleaved = P^T halves(P x), where P gathers the even dims, then the odd ones."""
    E = x.shape[-1]
    cos, sin = F.compute_rope_params(E, context_length=9)
    perm = np.concatenate([np.arange(0, E, 2), np.arange(1, E, 2)])  # pair i -> (i, i + E/2)
    halves = F.rope_forward(x[..., perm], cos, sin, offset)[0]
    unperm = np.empty_like(halves)
    unperm[..., perm] = halves
    inter = F.rope_forward(x, cos, sin, offset, interleaved=True)[0]
    np.testing.assert_allclose(inter, unperm, rtol=1e-13, atol=1e-13)


@given(rope_inputs(), st.booleans())
def test_backward_is_the_inverse_rotation(inputs, interleaved):
    """A rotation is orthogonal: its backward (transpose) undoes it and norms are kept."""
    x, offset = inputs
    cos, sin = F.compute_rope_params(x.shape[-1], context_length=10)
    out, cache = F.rope_forward(x, cos, sin, offset, interleaved=interleaved)
    np.testing.assert_allclose(F.rope_backward(out, cache), x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-12, atol=1e-12
    )


def test_positions_array_equals_offset_and_broadcasts():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 6))  # (B, H, T, E)
    cos, sin = F.compute_rope_params(6, context_length=12)
    by_offset = F.rope_forward(x, cos, sin, 5)[0]
    np.testing.assert_array_equal(
        F.rope_forward(x, cos, sin, positions=np.arange(5, 9))[0], by_offset
    )
    pos = np.array([[0, 1, 2, 3], [5, 6, 7, 8]])[:, None, :]  # (B, 1, T): one offset per sequence
    out = F.rope_forward(x, cos, sin, positions=pos)[0]
    np.testing.assert_array_equal(out[1], by_offset[1])
    np.testing.assert_array_equal(out[0], F.rope_forward(x, cos, sin)[0][0])


def test_llama31_scaling_keeps_fast_and_slows_slow_frequencies():
    E, base = 16, 500_000.0
    config = dict(LLAMA31, original_context_length=1024)
    inv = np.arctan2(*F.compute_rope_params(E, base, 2)[::-1])[1, : E // 2]
    inv_scaled = np.arctan2(*F.compute_rope_params(E, base, 2, config)[::-1])[1, : E // 2]
    wavelen = 2 * np.pi / inv  # the angle at position 1 is inv_freq itself
    fast = wavelen < 1024 / 4.0  # below original / high_freq_factor
    slow = wavelen > 1024 / 1.0  # above original / low_freq_factor
    assert fast.any() and slow.any()
    np.testing.assert_allclose(inv_scaled[fast], inv[fast], rtol=1e-12)
    np.testing.assert_allclose(inv_scaled[slow], inv[slow] / 8.0, rtol=1e-12)
    mid = ~fast & ~slow
    assert np.all((inv_scaled[mid] <= inv[mid]) & (inv_scaled[mid] >= inv[mid] / 8.0))


def test_dtype_follows_x():
    cos, sin = F.compute_rope_params(4, context_length=4)
    x = np.ones((3, 4), np.float32)
    out, cache = F.rope_forward(x, cos, sin)
    assert out.dtype == np.float32 and F.rope_backward(out, cache).dtype == np.float32


def test_errors_name_the_argument():
    cos, sin = F.compute_rope_params(4, context_length=4)
    with pytest.raises(ValueError, match="even"):
        F.compute_rope_params(5)
    with pytest.raises(ValueError, match="even"):
        F.rope_forward(np.ones((2, 3)), cos, sin)
    with pytest.raises(ValueError, match="context_length=4"):
        F.rope_forward(np.ones((3, 4)), cos, sin, offset=2)
    with pytest.raises(ValueError, match="cos"):
        F.rope_forward(np.ones((3, 4)), cos[:, :2], sin)
    with pytest.raises(ValueError, match="freq_config"):
        F.compute_rope_params(4, freq_config={"factor": 8.0})
    with pytest.raises(ValueError, match="dout"):
        F.rope_backward(np.ones((2, 4)), F.rope_forward(np.ones((3, 4)), cos, sin)[1])


# ---------------------------------------------------------------- rope_apply: partial rotary


@st.composite
def apply_inputs(draw):
    """x (B, H, T, E) and gathered tables (B, 1, T, R) or (T, R), R even, 2 <= R <= E."""
    E, T, B, H = draw(even_dims), draw(st.integers(1, 4)), draw(st.integers(1, 2)), 2
    R = 2 * draw(st.integers(1, E // 2))
    x = draw(arrays((B, H, T, E)))
    angles = draw(arrays((B, 1, T, R // 2), bound=10.0))
    if draw(st.booleans()):
        angles = angles[0, 0]  # (T, R/2): one row per position, shared by the batch
    angles = np.concatenate([angles, angles], axis=-1)  # split-halves tables
    return x, np.cos(angles), np.sin(angles)


@given(apply_inputs(), seeds, st.booleans())
def test_apply_forward_backward_match_torch(inputs, seed, interleaved):
    x, cos_t, sin_t = inputs
    out, cache = F.rope_apply_forward(x, cos_t, sin_t, interleaved=interleaved)
    g = upstream(out.shape, seed % 1000)
    dx = F.rope_apply_backward(g, cache)
    tx = t(x, True)
    ref = R.rope_partial(tx, t(cos_t), t(sin_t), interleaved)
    ref.backward(t(g))
    np.testing.assert_allclose(out, n(ref), err_msg="out", **F64)
    np.testing.assert_allclose(dx, n(tx.grad), err_msg="dx", **F64)


@given(apply_inputs(), seeds, st.booleans())
def test_apply_passes_the_rest_through_and_its_gradient_unchanged(inputs, seed, interleaved):
    x, cos_t, sin_t = inputs
    Rdim = cos_t.shape[-1]
    out, cache = F.rope_apply_forward(x, cos_t, sin_t, interleaved=interleaved)
    g = upstream(out.shape, seed % 1000)
    dx = F.rope_apply_backward(g, cache)
    np.testing.assert_array_equal(out[..., Rdim:], x[..., Rdim:])
    np.testing.assert_array_equal(dx[..., Rdim:], g[..., Rdim:])
    norms = np.linalg.norm(out[..., :Rdim], axis=-1), np.linalg.norm(x[..., :Rdim], axis=-1)
    np.testing.assert_allclose(*norms, rtol=1e-12, atol=1e-12)  # cos^2 + sin^2 = 1
    np.testing.assert_allclose(F.rope_apply_backward(out, cache), x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("interleaved", [False, True])
def test_apply_finite_differences_partial(interleaved):
    rng = np.random.default_rng(3)
    cos_t, sin_t = npattn.RoPE(fraction=0.5).tables(8, np.array([[1, 2, 3], [6, 7, 8]]))
    kw = {"cos_t": cos_t[:, None], "sin_t": sin_t[:, None], "interleaved": interleaved}
    report = check_op(
        F.rope_apply_forward, F.rope_apply_backward, {"x": rng.standard_normal((2, 3, 3, 8))},
        kw, **FD,
    )  # fmt: skip
    assert report.passed, report


@given(rope_inputs(), st.booleans())
def test_rope_forward_is_the_gather_then_rope_apply(inputs, interleaved):
    x, offset = inputs
    T, E = x.shape[-2:]
    cos, sin = F.compute_rope_params(E, context_length=10)
    rows = slice(offset, offset + T)
    out, cache = F.rope_forward(x, cos, sin, offset, interleaved=interleaved)
    ref, ref_cache = F.rope_apply_forward(x, cos[rows], sin[rows], interleaved=interleaved)
    np.testing.assert_array_equal(out, ref)
    g = upstream(x.shape, 1)
    np.testing.assert_array_equal(F.rope_backward(g, cache), F.rope_apply_backward(g, ref_cache))


def test_apply_keeps_its_tables_and_follows_the_dtype_of_x():
    rng = np.random.default_rng(4)
    cos_t, sin_t = npattn.RoPE().tables(4, np.arange(3))
    x = rng.standard_normal((3, 6))
    _, cache = F.rope_apply_forward(x, cos_t, sin_t)
    g = rng.standard_normal((3, 6))
    before = F.rope_apply_backward(g, cache)
    cos_t[:], sin_t[:] = 0.0, 1.0  # the caller edits its tables before the backward
    np.testing.assert_array_equal(F.rope_apply_backward(g, cache), before)
    out, cache = F.rope_apply_forward(x.astype(np.float32), cos_t, sin_t)
    assert out.dtype == np.float32 and F.rope_apply_backward(g, cache).dtype == np.float32


def test_apply_errors_name_the_argument():
    x, c = np.ones((2, 3, 6)), np.ones((3, 4))
    with pytest.raises(ValueError, match="R even"):
        F.rope_apply_forward(x, np.ones((3, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="R even"):
        F.rope_apply_forward(x, np.ones((3, 8)), np.ones((3, 8)))
    with pytest.raises(ValueError, match="must match"):
        F.rope_apply_forward(x, c, np.ones((3, 2)))
    with pytest.raises(ValueError, match="broadcast"):
        F.rope_apply_forward(x, np.ones((4, 4)), np.ones((4, 4)))
    with pytest.raises(ValueError, match="broadcast"):
        F.rope_apply_forward(x, np.ones((3, 3, 4)), np.ones((3, 3, 4)))
    with pytest.raises(TypeError, match="interleaved"):
        F.rope_apply_forward(x, c, c, interleaved="yes")
    with pytest.raises(ValueError, match="dout"):
        F.rope_apply_backward(np.ones((3, 6)), F.rope_apply_forward(x, c, c)[1])
