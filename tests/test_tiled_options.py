"""flash_attention_forward/backward's softcap and sinks options against F.sdpa_* and torch
autograd in float64, central differences, fully masked rows, and memory.
Shapes: q (..., H, L, E), k (..., G, S, E), v (..., G, S, Ev), sinks (H,)."""

import tracemalloc
from functools import partial

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, block_sizes, bool_masks, sdpa_inputs, seeds
from tolerances import F64, FD

from npattn import functional as F
from npattn.fast.dispatch import attention_backward
from npattn.fast.modern_tiled import tiled_attention_forward
from npattn.gradcheck import check_op

torch = pytest.importorskip("torch")
import modern_torch as R  # noqa: E402
from helpers import n, t, upstream  # noqa: E402

NAMES = ("out", "dq", "dk", "dv", "dsinks")
softcaps = st.one_of(st.none(), st.floats(0.3, 5.0))


def window_mask(L: int, S: int, window: int) -> np.ndarray:
    """(L, S) boolean, True = attend: query i sees key j when 0 <= i - j < window."""
    diff = np.arange(L)[:, None] - np.arange(S)[None, :]
    return (diff >= 0) & (diff < window)


def written_out_mask(L, S, attn_mask=None, is_causal=False, window=None):
    """The boolean mask (True = attend) that attn_mask, is_causal and window describe, or None."""
    mask = attn_mask
    if is_causal or window is not None:
        structure = window_mask(L, S, L if window is None else window)  # a window of L: causal
        mask = structure if mask is None else mask & structure
    return mask


def tiled_and_references(q, k, v, g, block_size, **kw):
    """(out, dq, dk, dv[, dsinks]) of the tiled op, of F.sdpa_* with the window written out as
    a mask and the tiles' dropout mask, and of torch autograd (modern_torch.attention)."""
    out, cache = F.flash_attention_forward(q, k, v, enable_gqa=True, block_size=block_size, **kw)
    got = (out,) + F.flash_attention_backward(g, cache)
    L, S = q.shape[-2], k.shape[-2]
    p, window, causal = kw.pop("dropout_p", 0.0), kw.pop("window", None), kw.pop("is_causal", False)
    kw.pop("rng", None)
    mask = written_out_mask(L, S, kw.pop("attn_mask", None), causal, window)
    keep = F.flash_dropout_mask(cache) if p > 0 else None
    ref_out, ref_cache = F.sdpa_forward(q, k, v, mask, p, enable_gqa=True, dropout_mask=keep, **kw)
    sdpa = (ref_out,) + F.sdpa_backward(g, ref_cache)
    groups = q.shape[-3] // k.shape[-3]
    tq, tk, tv = t(q, True), t(k, True), t(v, True)
    ts = None if kw.get("sinks") is None else t(kw["sinks"], True)
    rk, rv = tk.repeat_interleave(groups, dim=-3), tv.repeat_interleave(groups, dim=-3)
    ref = R.attention(tq, rk, rv, mask, softcap=kw.get("softcap"), sinks=ts, keep=keep, p=p)
    ref.backward(t(g))
    torch_ = tuple(n(a) for a in (ref, tq.grad, tk.grad, tv.grad))
    torch_ += () if ts is None else (n(ts.grad),)
    return got, {"sdpa": sdpa, "torch": torch_}


def assert_equal_to_references(got, references):
    for ref_name, expected in references.items():
        assert len(got) == len(expected), ref_name
        for name, a, b in zip(NAMES, got, expected):
            assert a.shape == b.shape, (ref_name, name)
            np.testing.assert_allclose(a, b, err_msg=f"{name} vs {ref_name}", **F64)
    assert all(np.isfinite(a).all() for a in got)


@st.composite
def structures(draw, L: int, S: int, scores_shape: tuple):
    """One of: nothing, is_causal, a window, a boolean mask (fully masked rows included), a
    left key padding (whole key blocks masked before the first real key; all of them when
    every key is padding), or a window with a mask or a padding."""
    kinds = ["none", "causal", "window", "mask", "padding", "window+mask", "window+padding"]
    kind = draw(st.sampled_from(kinds))
    kw = {}
    if kind == "causal":
        kw["is_causal"] = True
    if "window" in kind:
        kw["window"] = draw(st.integers(1, 7))
    if "mask" in kind:
        kw["attn_mask"] = draw(bool_masks(scores_shape))
    if "padding" in kind:
        kw["attn_mask"] = np.arange(S) >= draw(st.integers(0, S))  # (S,), True = a real key
    return kw


@given(st.data(), sdpa_inputs(gqa=True), block_sizes(), softcaps, st.booleans(), seeds)
def test_softcap_and_sinks_equal_sdpa_and_torch(data, qkv, block_size, softcap, sinks, seed):
    q, k, v = qkv
    L, S, H = q.shape[-2], k.shape[-2], q.shape[-3]
    kw = data.draw(structures(L, S, q.shape[:-1] + (S,)))
    kw["softcap"] = softcap
    kw["sinks"] = data.draw(arrays((H,))) if sinks else None
    if seed % 3 == 0:
        kw.update(dropout_p=0.3, rng=seed)
    g = upstream(q.shape[:-1] + v.shape[-1:], seed % 1000)
    got, references = tiled_and_references(q, k, v, g, block_size, **kw)
    assert len(got) == (5 if sinks else 4)
    assert_equal_to_references(got, references)


@given(sdpa_inputs(gqa=True), block_sizes(), softcaps, st.data(), seeds)
def test_left_padding_masks_whole_key_blocks_before_the_sink(qkv, block_size, softcap, data, seed):
    """Rows whose first key blocks are all padding, then real keys (or none): the sink joins
    a denominator whose shift was set while every score was -inf."""
    q, k, v = qkv
    S, H = k.shape[-2], q.shape[-3]
    kw = {"softcap": softcap, "sinks": data.draw(arrays((H,)))}
    kw["attn_mask"] = np.arange(S) >= data.draw(st.integers(1, S))  # (S,), True = a real key
    if data.draw(st.booleans()):
        kw["window"] = data.draw(st.integers(1, 7))
    g = upstream(q.shape[:-1] + v.shape[-1:], seed % 1000)
    got, references = tiled_and_references(q, k, v, g, block_size, **kw)
    assert_equal_to_references(got, references)


@given(st.data(), sdpa_inputs(gqa=True), block_sizes(), seeds)
def test_large_scores_with_a_softcap_and_sinks_far_from_them(data, qkv, block_size, seed):
    """Scores ~ 1e2 before the cap, sinks far above or below every score."""
    q, k, v = qkv
    H = q.shape[-3]
    sinks = data.draw(arrays((H,), bound=3.0)) + data.draw(st.sampled_from([-60.0, 0.0, 60.0]))
    g = upstream(q.shape[:-1] + v.shape[-1:], seed % 1000)
    for softcap in (None, 30.0):
        got, references = tiled_and_references(
            q * 6, k * 6, v, g, block_size, softcap=softcap, sinks=sinks, is_causal=True
        )
        assert_equal_to_references(got, references)


@pytest.mark.parametrize("block_size", [1, 2, (3, 2), 64])
def test_fully_masked_rows_give_zero_and_the_sink_takes_everything(block_size):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s) for s in ((2, 3, 5, 4), (2, 3, 7, 4), (2, 3, 7, 2)))
    sinks = rng.standard_normal(3)
    mask = rng.random((5, 7)) > 0.4
    mask[1] = False
    mask[3, :5] = False  # masked over whole key blocks first, then attending
    g = upstream((2, 3, 5, 2), 1)
    for softcap in (None, 2.0):
        kw = dict(attn_mask=mask, softcap=softcap, sinks=sinks)
        out, cache = F.flash_attention_forward(q, k, v, block_size=block_size, **kw)
        np.testing.assert_array_equal(out[..., 1, :], 0.0)
        # lse holds the sink: the sink's weight exp(sink - lse) is 1 on the masked row
        np.testing.assert_allclose(cache.lse[..., 1, 0], np.broadcast_to(sinks, (2, 3)))
        dq, dk, dv, dsinks = F.flash_attention_backward(g, cache)
        np.testing.assert_array_equal(dq[..., 1, :], 0.0)
        got, references = tiled_and_references(q, k, v, g, block_size, **kw)
        assert_equal_to_references(got, references)
    # and without sinks, a fully masked row's lse stays finite and its output 0
    out, cache = F.flash_attention_forward(q, k, v, mask, block_size=block_size, softcap=2.0)
    np.testing.assert_array_equal(out[..., 1, :], 0.0)
    assert np.isfinite(cache.lse).all()


@pytest.mark.parametrize("block_size", [1, (2, 3), 8])
@pytest.mark.parametrize("causal", [True, False])
def test_key_padding_through_tiled_attention_forward(block_size, causal):
    """The modern classes' entry: key padding (B, S), GQA, window, scale, softcap, sinks; a
    batch whose first keys are padding gives fully masked rows."""
    rng = np.random.default_rng(int(causal))
    B, H, G, T, E = 3, 4, 2, 9, 3
    q = rng.standard_normal((B, H, T, E))
    k, v = rng.standard_normal((B, G, T, E)), rng.standard_normal((B, G, T, E))
    kpm = rng.random((B, T)) > 0.3
    kpm[0, :3] = False  # causal: queries 0-2 of batch 0 see no real key
    kpm[1] = False  # every key padding
    sinks, g = rng.standard_normal(H), upstream((B, H, T, E), 2)
    for window in (None, 4) if causal else (None,):
        kw = dict(scale=0.7, softcap=1.5, sinks=sinks)
        out, cache = tiled_attention_forward(
            q, k, v, kpm, causal=causal, window=window, enable_gqa=True, **kw
        )
        got = (out,) + attention_backward(g, cache)  # dispatch passes dsinks through
        mask = written_out_mask(T, T, kpm[:, None, None, :], causal, window)
        ref_out, ref_cache = F.sdpa_forward(q, k, v, mask, enable_gqa=True, **kw)
        assert_equal_to_references(got, {"sdpa": (ref_out,) + F.sdpa_backward(g, ref_cache)})
        np.testing.assert_array_equal(out[1], 0.0)


@given(sdpa_inputs(gqa=True), block_sizes(), st.floats(0.3, 3.0), seeds)
def test_backward_with_softcap_and_sinks_matches_finite_differences(qkv, block, softcap, seed):
    q, k, v = qkv
    rng = np.random.default_rng(seed)
    L, S, H = q.shape[-2], k.shape[-2], q.shape[-3]
    kwargs = {"softcap": softcap, "block_size": block, "enable_gqa": True}
    if seed % 2:
        kwargs["window"] = int(rng.integers(1, 5))
    if seed % 3:  # rows may be fully masked
        kwargs["attn_mask"] = rng.random((L, S)) > 0.4
    if seed % 5 == 0:  # dropout from a fixed seed: every evaluation redraws the same masks
        kwargs.update(dropout_p=0.3, rng=seed % 1000)
    report = check_op(
        F.flash_attention_forward,
        F.flash_attention_backward,
        {"q": q, "k": k, "v": v, "sinks": rng.standard_normal(H)},
        kwargs,
        seed=seed % 1000,
        **FD,
    )
    assert report.passed, report


def test_sinks_broadcastable_to_the_rows_and_float32():
    """sinks of any shape broadcastable to (..., L, 1), as sdpa_forward takes them; float32
    inputs keep float32 throughout, dsinks included."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, 3, 6, 4)) for _ in range(3))
    g = upstream((2, 3, 6, 4), 4)
    for sinks in (rng.standard_normal((3, 1, 1)), rng.standard_normal((2, 1, 6, 1))):
        got, references = tiled_and_references(q, k, v, g, 4, softcap=2.0, sinks=sinks)
        assert_equal_to_references(got, references)
        assert got[-1].shape == sinks.shape
    args32 = [a.astype(np.float32) for a in (q, k, v)]
    out, cache = F.flash_attention_forward(*args32, softcap=2.0, sinks=np.ones(3), block_size=4)
    grads = F.flash_attention_backward(g.astype(np.float32), cache)
    assert out.dtype == np.float32 and all(a.dtype == np.float32 for a in grads)


def test_inputs_not_modified_and_the_cache_keeps_its_own_sinks():
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((2, 3, 6, 4)) for _ in range(3))
    sinks, g = rng.standard_normal(3), upstream((2, 3, 6, 4), 6)
    copies = [a.copy() for a in (q, k, v, sinks)]
    out, cache = F.flash_attention_forward(q, k, v, is_causal=True, softcap=1.0, sinks=sinks)
    before = F.flash_attention_backward(g, cache)
    for a, b in zip((q, k, v, sinks), copies):
        np.testing.assert_array_equal(a, b)
    sinks += 5.0  # the caller changes its array after the forward
    after = F.flash_attention_backward(g, cache)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_bad_softcap_and_sinks_name_the_argument():
    q = np.zeros((2, 3, 4, 5))
    for bad in (0.0, -1.0, np.inf):
        with pytest.raises(ValueError, match="softcap must be a finite float > 0"):
            F.flash_attention_forward(q, q, q, softcap=bad)
    with pytest.raises(TypeError, match="softcap"):
        F.flash_attention_forward(q, q, q, softcap="1")
    with pytest.raises(ValueError, match=r"sinks of shape \(H,\) needs heads on axis -3"):
        F.flash_attention_forward(q, q, q, sinks=np.ones(2))  # 3 heads
    with pytest.raises(ValueError, match="sinks of shape"):
        F.flash_attention_forward(q, q, q, sinks=np.ones((4, 2)))
    _, cache = F.flash_attention_forward(q, q, q, softcap=1.0)
    assert len(F.flash_attention_backward(np.ones((2, 3, 4, 5)), cache)) == 3


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_stays_linear_with_softcap_sinks_and_a_window():
    """Forward+backward in float64, small tiles, a window of 100, with and without softcap and
    sinks. Measured: ~3.0 MB at T = 512, ~11 MB at T = 2048, either way; one (T, T) float64
    array is 34 MB at T = 2048 (a boolean one 4 MB), so forming any breaks the ratio."""
    peaks = {}
    for T in (512, 2048):
        rng = np.random.default_rng(0)
        q, k, v, g = (rng.standard_normal((1, 2, T, 32)) for _ in range(4))
        sinks = rng.standard_normal(2)

        def run(q=q, k=k, v=v, g=g, **options):
            _, cache = F.flash_attention_forward(q, k, v, window=100, block_size=64, **options)
            F.flash_attention_backward(g, cache)

        peaks[T] = _peak_bytes(partial(run, softcap=20.0, sinks=sinks)), _peak_bytes(run)
    (options_512, _), (options_2k, plain_2k) = peaks[512], peaks[2048]
    assert options_2k < 4.5 * options_512  # 4x the tokens: linear, plus a fixed tile
    assert options_2k < 1.1 * plain_2k  # the options add no array of their own to speak of
    assert options_2k < 2048 * 2048 * 8 / 2
