"""npattn.functional.flash_attention_* (tiled attention) against torch SDPA (math backend) and
F.sdpa_*, finite differences, dropout regeneration, the modules' attn_impl, and memory.
Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev)."""

import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import block_sizes, bool_masks, float_masks, sdpa_inputs, seeds
from tolerances import F64, FD

import npattn
from npattn import functional as F
from npattn.fast import dispatch as _impl
from npattn.fast import tiled_kernels
from npattn.gradcheck import check_module, check_op

torch = pytest.importorskip("torch")
from helpers import assert_close_at_large_logits, torch_sdpa_math, upstream  # noqa: E402

NAMES = ("out", "dq", "dk", "dv")


def check_tiled(q, k, v, seed, block_size, **kw):
    """Tiled forward and backward equal torch's math backend and F.sdpa_* in float64."""
    out, cache = F.flash_attention_forward(q, k, v, block_size=block_size, **kw)
    g = upstream(out.shape, seed)
    got = (out,) + F.flash_attention_backward(g, cache)
    ref_out, ref_cache = F.sdpa_forward(q, k, v, **kw)
    references = {
        "torch": torch_sdpa_math(q, k, v, g, **kw),
        "sdpa": (ref_out,) + F.sdpa_backward(g, ref_cache),
    }
    for ref_name, expected in references.items():
        for name, a, b in zip(NAMES, got, expected):
            assert a.shape == b.shape, (ref_name, name)
            np.testing.assert_allclose(a, b, err_msg=f"{name} vs {ref_name}", **F64)
    assert all(np.isfinite(a).all() for a in got)


def scores_shape(q, k):
    return np.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (q.shape[-2], k.shape[-2])


@given(sdpa_inputs(), block_sizes(), seeds, st.one_of(st.none(), st.floats(0.05, 2.0)))
def test_no_mask_any_rank_custom_scale(qkv, block_size, seed, scale):
    check_tiled(*qkv, seed % 1000, block_size, scale=scale)


@given(sdpa_inputs(), block_sizes(), seeds)
def test_is_causal_top_left_with_l_not_equal_s(qkv, block_size, seed):
    check_tiled(*qkv, seed % 1000, block_size, is_causal=True)


@given(st.data(), sdpa_inputs(), block_sizes(), seeds)
def test_boolean_masks_of_every_broadcastable_shape(data, qkv, block_size, seed):
    mask = data.draw(bool_masks(scores_shape(*qkv[:2])))
    check_tiled(*qkv, seed % 1000, block_size, attn_mask=mask)


@given(st.data(), sdpa_inputs(), block_sizes(), seeds)
def test_float_masks_with_minus_inf(data, qkv, block_size, seed):
    mask = data.draw(float_masks(scores_shape(*qkv[:2])))
    check_tiled(*qkv, seed % 1000, block_size, attn_mask=mask)


@given(sdpa_inputs(gqa=True), block_sizes(), st.booleans(), seeds)
def test_gqa(qkv, block_size, is_causal, seed):
    check_tiled(*qkv, seed % 1000, block_size, enable_gqa=True, is_causal=is_causal)


@given(sdpa_inputs(), block_sizes(), seeds)
def test_extreme_logits_stay_finite_and_close(qkv, block_size, seed):
    q, k, v = qkv
    q, k = q * 300, k * 300  # logits up to ~1e6
    out, cache = F.flash_attention_forward(q, k, v, block_size=block_size)
    g = upstream(out.shape, seed % 1000)
    got = (out,) + F.flash_attention_backward(g, cache)
    assert_close_at_large_logits(got, torch_sdpa_math(q, k, v, g), q, k, v, g)
    out, _ = F.flash_attention_forward(q * 1e2, k * 1e2, v, block_size=block_size)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("block_size", [1, 2, 3, (2, 3), 64])
def test_fully_masked_rows_give_zero_output_and_gradient(block_size):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s) for s in ((2, 5, 3), (2, 7, 3), (2, 7, 2)))
    mask = rng.random((5, 7)) > 0.5
    mask[1] = False
    mask[3, :4] = False  # masked over whole key blocks first, then attending
    for m in (mask, np.where(mask, 0.0, -np.inf)):
        out, cache = F.flash_attention_forward(q, k, v, attn_mask=m, block_size=block_size)
        np.testing.assert_array_equal(out[:, 1], 0.0)
        assert np.isfinite(cache.lse).all()
        dq, dk, dv = F.flash_attention_backward(upstream(out.shape), cache)
        np.testing.assert_array_equal(dq[:, 1], 0.0)
        check_tiled(q, k, v, 1, block_size, attn_mask=m)


@given(sdpa_inputs(), block_sizes(), seeds)
def test_backward_matches_finite_differences(qkv, block_size, seed):
    q, k, v = qkv
    kwargs = {"is_causal": seed % 2 == 0, "block_size": block_size}
    if seed % 3 == 0:  # dropout from a fixed seed: every evaluation redraws the same masks
        kwargs.update(dropout_p=0.3, rng=seed % 1000)
    report = check_op(
        F.flash_attention_forward,
        F.flash_attention_backward,
        {"q": q, "k": k, "v": v},
        kwargs,
        seed=seed % 1000,
        **FD,
    )
    assert report.passed, report


@given(sdpa_inputs(min_batch_dims=1), block_sizes(), st.floats(0.05, 0.9), st.booleans(), seeds)
def test_dropout_equals_sdpa_and_torch_with_the_regenerated_mask(qkv, bs, p, is_causal, seed):
    q, k, v = qkv
    kw = dict(dropout_p=p, is_causal=is_causal)
    out, cache = F.flash_attention_forward(q, k, v, block_size=bs, rng=seed, **kw)
    keep = F.flash_dropout_mask(cache)  # (..., L, S), what the tiles drew
    g = upstream(out.shape, seed % 1000)
    got = (out,) + F.flash_attention_backward(g, cache)
    ref_out, ref_cache = F.sdpa_forward(q, k, v, dropout_mask=keep, **kw)
    for expected in (
        (ref_out,) + F.sdpa_backward(g, ref_cache),
        torch_sdpa_math(q, k, v, g, dropout_mask=keep, **kw),
    ):
        for name, a, b in zip(NAMES, got, expected):
            np.testing.assert_allclose(a, b, err_msg=name, **F64)


def test_dropout_is_reproducible_and_keeps_about_1_minus_p():
    q = np.random.default_rng(0).standard_normal((2, 300, 4))
    a, ca = F.flash_attention_forward(q, q, q, dropout_p=0.25, rng=7, block_size=64)
    b, _ = F.flash_attention_forward(q, q, q, dropout_p=0.25, rng=7, block_size=64)
    c, _ = F.flash_attention_forward(q, q, q, dropout_p=0.25, rng=8, block_size=64)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    keep = F.flash_dropout_mask(ca)  # 180,000 draws: the standard error of the mean is 0.001
    assert abs(keep.mean() - 0.75) < 0.01
    tiles = keep[..., :64, :64], keep[..., :64, 64:128]  # tiles are not copies of each other
    assert not np.array_equal(*tiles)


def record_tiles(monkeypatch) -> list:
    """Every tile the kernels compute, as (rows, cols) slices."""
    calls = []
    scores = tiled_kernels.tile_scores
    monkeypatch.setattr(
        tiled_kernels, "tile_scores", lambda *a, **kw: calls.append(a[-3:-1]) or scores(*a, **kw)
    )
    return calls


def test_causal_skips_tiles_above_the_diagonal(monkeypatch):
    calls = record_tiles(monkeypatch)
    q = np.random.default_rng(0).standard_normal((8, 3))
    out, cache = F.flash_attention_forward(q, q, q, is_causal=True, block_size=2)
    assert len(calls) == 1 + 2 + 3 + 4  # 4 query blocks; block i meets key blocks 0..i
    assert all(c.start <= r.stop - 1 for r, c in calls)
    F.flash_attention_backward(upstream(out.shape), cache)
    assert len(calls) == 2 * 10


def window_mask(L: int, S: int, window: int) -> np.ndarray:
    """(L, S) boolean, True = attend: query i sees key j when 0 <= i - j < window."""
    diff = np.arange(L)[:, None] - np.arange(S)[None, :]
    return (diff >= 0) & (diff < window)


def check_window(q, k, v, window, block_size, seed, **kw):
    """Tiled with a window equals F.sdpa_* with the window as a boolean mask, in float64."""
    mask = window_mask(q.shape[-2], k.shape[-2], window)
    if kw.get("attn_mask") is not None:
        mask = mask & kw["attn_mask"]
    out, cache = F.flash_attention_forward(q, k, v, block_size=block_size, window=window, **kw)
    g = upstream(out.shape, seed)
    got = (out,) + F.flash_attention_backward(g, cache)
    kw.pop("is_causal", None)  # the window mask is causal already
    kw.pop("attn_mask", None)  # and includes the caller's mask
    if kw.get("dropout_p"):
        kw["dropout_mask"] = F.flash_dropout_mask(cache)
        kw.pop("rng")
    ref_out, ref_cache = F.sdpa_forward(q, k, v, attn_mask=mask, **kw)
    for name, a, b in zip(NAMES, got, (ref_out,) + F.sdpa_backward(g, ref_cache)):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, err_msg=name, **F64)


@given(sdpa_inputs(), block_sizes(), st.integers(1, 8), seeds)
def test_window_equals_sdpa_with_the_window_mask(qkv, block_size, window, seed):
    check_window(*qkv, window, block_size, seed % 1000, is_causal=seed % 2 == 0)


@pytest.mark.parametrize("window", [1, 2, 5, 13, 14, 40])  # 13 = T - 1, 14 = T, 40 > T
@pytest.mark.parametrize("block_size", [1, 3, (4, 3), (5, 2), 16])
def test_window_edges_with_blocks_that_do_not_divide(window, block_size):
    rng = np.random.default_rng(window)
    q, k, v = (rng.standard_normal((2, 14, 3)) for _ in range(3))
    check_window(q, k, v, window, block_size, 1)
    check_window(q[:, :9], k, v, window, block_size, 2)  # L < S
    check_window(q, k[:, :9], v[:, :9], window, block_size, 3)  # L > S: late rows see nothing


@given(sdpa_inputs(min_batch_dims=1), block_sizes(), st.integers(1, 6), seeds)
def test_window_with_dropout_and_a_boolean_mask(qkv, block_size, window, seed):
    q, k, v = qkv
    mask = np.random.default_rng(seed).random(q.shape[-2:-1] + k.shape[-2:-1]) > 0.3
    check_window(q, k, v, window, block_size, seed % 1000, attn_mask=mask)
    check_window(q, k, v, window, block_size, seed % 1000, dropout_p=0.3, rng=seed)


def test_window_computes_only_the_tiles_it_sees(monkeypatch):
    calls = record_tiles(monkeypatch)
    T, block, window = 40, 4, 6
    q = np.random.default_rng(0).standard_normal((T, 3))
    out, cache = F.flash_attention_forward(q, q, q, block_size=block, window=window)
    seen = window_mask(T, T, window)
    needed = {
        (r0, c0)
        for r0 in range(0, T, block)
        for c0 in range(0, T, block)
        if seen[r0 : r0 + block, c0 : c0 + block].any()
    }
    assert sorted((r.start, c.start) for r, c in calls) == sorted(needed)
    n = T // block
    assert len(needed) == 1 + 2 + 3 * (n - 2) < n * (n + 1) // 2  # 3 per row block, not i + 1
    F.flash_attention_backward(upstream(out.shape), cache)
    assert len(calls) == 2 * len(needed)


def test_bad_window_names_the_argument():
    q = np.zeros((4, 3))
    with pytest.raises(ValueError, match="window must be >= 1"):
        F.flash_attention_forward(q, q, q, window=0)
    with pytest.raises(TypeError, match="window must be an int"):
        F.flash_attention_forward(q, q, q, window=2.5)


@given(sdpa_inputs(), block_sizes(), seeds)
def test_inputs_not_modified_and_float32_kept(qkv, block_size, seed):
    q, k, v = (a.astype(np.float32) for a in qkv)
    mask = np.random.default_rng(seed).random(scores_shape(q, k)[-2:]) > 0.3
    copies = [a.copy() for a in (q, k, v, mask)]
    for kw in (dict(is_causal=True, dropout_p=0.2, rng=seed), dict(attn_mask=mask)):
        out, cache = F.flash_attention_forward(q, k, v, block_size=block_size, **kw)
        grads = F.flash_attention_backward(upstream(out.shape, dtype=np.float32), cache)
        assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
        assert cache.lse.dtype == np.float32
    for a, b in zip((q, k, v, mask), copies):
        np.testing.assert_array_equal(a, b)


def _mha(impl, dropout=0.0, context_length=8):
    m = npattn.MultiHeadAttention(5, 4, context_length, dropout, 2, True, rng=3, attn_impl=impl)
    return m.astype(np.float64)


def _causal(impl, dropout=0.0, context_length=8):
    m = npattn.CausalAttention(5, 3, context_length, dropout, True, rng=3, attn_impl=impl)
    return m.astype(np.float64)


@pytest.mark.parametrize("make", [_mha, _causal])
@given(T=st.integers(1, 8), seed=seeds)
def test_modules_tiled_equal_reference(make, T, seed):
    x = np.random.default_rng(seed).standard_normal((2, T, 5))
    ref, tiled_m = make("reference", 0.25).eval(), make("tiled", 0.25).eval()
    y_ref, y_tiled = ref(x), tiled_m(x)
    np.testing.assert_allclose(y_tiled, y_ref, **F64)
    assert tiled_m.attn_weights is None and ref.attn_weights is not None
    g = upstream(y_ref.shape, seed % 1000)
    np.testing.assert_allclose(tiled_m.backward(g), ref.backward(g), **F64)
    for name, grad in ref.grads.items():
        np.testing.assert_allclose(tiled_m.grads[name], grad, err_msg=name, **F64)


@pytest.mark.parametrize("make", [_mha, _causal])
def test_modules_tiled_follow_a_loaded_non_causal_mask(make):
    ref, tiled_m = make("reference"), make("tiled")
    sd = ref.state_dict()
    sd["mask"] = sd["mask"].copy()
    sd["mask"][5, 2] = 1.0  # token 5 may no longer see token 2
    ref.load_state_dict(sd)
    tiled_m.load_state_dict(sd)
    x = np.random.default_rng(0).standard_normal((2, 7, 5))
    np.testing.assert_allclose(tiled_m(x), ref(x), **F64)


@pytest.mark.parametrize("make", [_mha, _causal])
def test_modules_tiled_with_dropout_match_finite_differences(make):
    x = np.random.default_rng(1).standard_normal((2, 6, 5))
    report = check_module(make("tiled", 0.25), x, seed=4)
    assert report.passed, report


def test_auto_picks_tiled_from_the_threshold_up():
    T = _impl.AUTO_TILED_MIN_TOKENS
    m = _mha("auto", context_length=T)
    x = np.random.default_rng(0).standard_normal((1, T, 5))
    m(x[:, : T - 1])
    assert m.attn_weights is not None  # blocked below the threshold
    y = m(x)
    assert m.attn_weights is None  # tiled from it on
    m.attn_impl = "reference"
    np.testing.assert_allclose(y, m(x), **F64)


def test_bad_attn_impl_and_block_size_name_the_argument():
    with pytest.raises(ValueError, match="attn_impl must be one of"):
        npattn.MultiHeadAttention(4, 4, 8, 0.0, 2, attn_impl="flash")
    with pytest.raises(ValueError, match="attn_impl must be one of"):
        npattn.CausalAttention(4, 4, 8, 0.0, attn_impl=None)
    q = np.zeros((2, 4, 3))
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        F.flash_attention_forward(q, q, q, block_size=0)
    with pytest.raises(TypeError, match="block_size"):
        F.flash_attention_forward(q, q, q, block_size=2.5)
    with pytest.raises(ValueError, match="is_causal=True cannot be combined with attn_mask"):
        F.flash_attention_forward(q, q, q, np.ones((4, 4), bool), True)
    with pytest.raises(ValueError, match=r"does not broadcast to .*\(2, 4, 4\)"):
        F.flash_attention_forward(q, q, q, np.ones((3, 4), bool))
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\]"):
        F.flash_attention_forward(q, q, q, dropout_p=1.5)
    _, cache = F.flash_attention_forward(q, q, q)
    with pytest.raises(ValueError, match=r"dout must have the forward output's shape \(2, 4, 3\)"):
        F.flash_attention_backward(np.zeros((2, 4, 2)), cache)


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_tiled_peak_memory_is_linear_and_far_below_reference():
    """Forward+backward, causal, float32, B = H = 1, E = 64: numpy reports every allocation
    to tracemalloc, so the peaks are deterministic. Storing any (T, T) array would fail this."""
    peaks = {}
    for T in (512, 1024):
        rng = np.random.default_rng(0)
        q, k, v, g = (rng.standard_normal((1, 1, T, 64)).astype(np.float32) for _ in range(4))

        def reference(q=q, k=k, v=v, g=g):
            F.sdpa_backward(g, F.sdpa_forward(q, k, v, is_causal=True)[1])

        def tiled_(q=q, k=k, v=v, g=g):
            cache = F.flash_attention_forward(q, k, v, is_causal=True, block_size=128)[1]
            F.flash_attention_backward(g, cache)

        peaks[T] = _peak_bytes(reference), _peak_bytes(tiled_)
    (reference_half, tiled_half), (reference_1k, tiled_1k) = peaks[512], peaks[1024]
    # measured: ~3-4 MB vs ~14 MB (the folded columns, and the cache's private copies of q,
    # k, v and out: npattn/_guard.py); one (T, T) float32 array is 4.2 MB
    assert tiled_1k < 0.3 * reference_1k
    assert reference_1k > 3.5 * reference_half  # quadratic in T
    assert tiled_1k < 2.0 * tiled_half  # linear in T, plus a fixed tile


@pytest.mark.parametrize("jump", [43.5, 353.0, 800.0])  # float32 rescale, float64 rescale, redo
def test_scores_far_above_the_first_tiles_shift(jump):
    """Later tiles fold the first tile's row max into step 1; scores far above it make their
    row sums large (rescaled) or overflow (the tile is redone exactly)."""
    rng = np.random.default_rng(0)
    k = np.concatenate([np.zeros((3, 1)), np.full((20, 1), jump)])  # (S, E): scores 0, then jump
    k += 1e-3 * rng.standard_normal(k.shape)
    q = np.ones((4, 1))
    v = rng.standard_normal((23, 2))
    out, cache = F.flash_attention_forward(q, k, v, scale=1.0, block_size=(4, 3))
    g = upstream(out.shape)
    got = (out,) + F.flash_attention_backward(g, cache)
    ref_out, ref_cache = F.sdpa_forward(q, k, v, scale=1.0)
    for name, a, b in zip(NAMES, got, (ref_out,) + F.sdpa_backward(g, ref_cache)):
        np.testing.assert_allclose(a, b, err_msg=name, **F64)
    # float32: the scores themselves carry errors ~ eps * jump, so only the output is compared
    args32 = [a.astype(np.float32) for a in (q, k, v)]
    out32, cache32 = F.flash_attention_forward(*args32, scale=1.0, block_size=(4, 3))
    grads32 = F.flash_attention_backward(g.astype(np.float32), cache32)
    assert all(np.isfinite(a).all() for a in (out32, *grads32))
    np.testing.assert_allclose(out32, ref_out, rtol=1e-4, atol=1e-4)
