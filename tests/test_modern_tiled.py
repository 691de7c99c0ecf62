"""attn_impl="tiled" for GroupedQueryAttention, MultiHeadAttentionWithSWA and Qwen3Attention
(npattn/fast/modern_tiled.py): output, dx and every parameter gradient equal the reference's in
float64, no (T, S) mask is formed, finite differences with dropout, and the argument checks.
Shapes: x (B, T, d_in) -> (B, T, d_out or d_in)."""

import copy

import numpy as np
import pytest
from helpers import upstream
from tolerances import F64

import npattn
from npattn.fast import modern_tiled
from npattn.gradcheck import check_module

MODERN_IMPLS = r"attn_impl must be one of \('reference', 'tiled'\)"


def gqa(H=4, G=2, E=2, dropout=0.0, seed=0, **kw):
    return npattn.GroupedQueryAttention(5, H * E, dropout, H, G, True, rng=seed, **kw)


def swa(window, dropout=0.0, seed=0, **kw):
    return npattn.MultiHeadAttentionWithSWA(5, 6, dropout, 2, True, window, rng=seed, **kw)


def qwen3(G=1, qk_norm=True, T=6, seed=0, **kw):
    # as tests/test_modern_modules.py builds it: head_dim 4, context_length T + 2
    return npattn.Qwen3Attention(
        5, 2, G, 4, qk_norm, rope_base=10_000.0, context_length=T + 2, rng=seed, **kw
    )


def pair(m, seed=0):
    """m in float64 with random weights (RMSNorm scales too), and a tiled deep copy."""
    rng = np.random.default_rng(seed)
    m.astype(np.float64)
    m.load_state_dict({k: rng.standard_normal(v.shape) for k, v in m.state_dict().items()})
    tiled = copy.deepcopy(m)
    tiled.attn_impl = "tiled"
    return m, tiled


def padding(B, S, lengths):
    """(B, S) key padding, True = a real key: the first lengths[b] keys of sequence b."""
    return np.arange(S)[None, :] < np.array(lengths)[:, None]


def assert_tiled_equals_reference(ref, tiled, x, seed=0, **kw):
    y_ref, y = ref(x, **kw), tiled(x, **kw)
    np.testing.assert_allclose(y, y_ref, err_msg="out", **F64)
    assert tiled.attn_weights is None and ref.attn_weights is not None
    assert getattr(tiled, "dropout_mask", None) is None
    g = upstream(y.shape, seed)
    dx_ref, dx = ref.backward(g), tiled.backward(g)
    dx_ref, dx = (d if isinstance(d, tuple) else (d,) for d in (dx_ref, dx))
    for i, (a, b) in enumerate(zip(dx, dx_ref)):
        np.testing.assert_allclose(a, b, err_msg=f"dx[{i}]", **F64)
    assert set(tiled.grads) == set(ref.grads) == set(ref.state_dict())
    for k, v in ref.grads.items():
        np.testing.assert_allclose(tiled.grads[k], v, err_msg=k, **F64)


@pytest.fixture
def spy(monkeypatch):
    """The arguments every flash_attention_forward call of the modern classes receives."""
    calls = []
    real = modern_tiled.flash_attention_forward

    def recording(q, k, v, attn_mask, is_causal, **kw):
        shape = None if attn_mask is None else attn_mask.shape
        calls.append(dict(kw, mask_shape=shape, is_causal=is_causal))
        return real(q, k, v, attn_mask, is_causal, **kw)

    monkeypatch.setattr(modern_tiled, "flash_attention_forward", recording)
    return calls


X = np.random.default_rng(1).standard_normal((2, 6, 5))
LENGTHS = [(6, 4), (0, 3), (1, 6)]  # 0: a sequence with no real key attends to nothing


@pytest.mark.parametrize("H, G", [(4, 1), (4, 2), (2, 2)])  # MQA, GQA, MHA
@pytest.mark.parametrize("lengths", [None, *LENGTHS])
def test_gqa_tiled_equals_reference(H, G, lengths, spy):
    ref, tiled = pair(gqa(H, G))
    kpm = None if lengths is None else padding(2, 6, lengths)
    assert_tiled_equals_reference(ref, tiled, X, key_padding_mask=kpm)
    (call,) = spy
    assert call["enable_gqa"] and call["window"] == (None if kpm is None else 6)
    assert call["is_causal"] == (kpm is None)
    assert call["mask_shape"] == (None if kpm is None else (2, 1, 1, 6))  # never (T, S)


@pytest.mark.parametrize("S, lengths", [(3, None), (9, None), (4, (4, 0)), (9, (2, 9))])
def test_gqa_tiled_cross_attention_equals_reference(S, lengths, spy):
    ref, tiled = pair(gqa(4, 2))
    x_kv = np.random.default_rng(S).standard_normal((2, S, 5))
    kpm = None if lengths is None else padding(2, S, lengths)
    assert_tiled_equals_reference(ref, tiled, X, x_kv=x_kv, key_padding_mask=kpm)
    (call,) = spy
    assert not call["is_causal"] and call["window"] is None  # cross-attention: not causal


@pytest.mark.parametrize("window", [None, 1, 2, 5, 6, 9])  # T = 6
@pytest.mark.parametrize("lengths", [None, *LENGTHS])
def test_swa_tiled_equals_reference(window, lengths, spy):
    ref, tiled = pair(swa(window))
    kpm = None if lengths is None else padding(2, 6, lengths)
    assert_tiled_equals_reference(ref, tiled, X, key_padding_mask=kpm)
    (call,) = spy
    assert call["window"] == (window if window or kpm is None else 6)
    assert call["mask_shape"] == (None if kpm is None else (2, 1, 1, 6))


@pytest.mark.parametrize("G", [1, 2])
@pytest.mark.parametrize("qk_norm", [True, False])
@pytest.mark.parametrize("lengths", [None, (5, 2)])
def test_qwen3_tiled_equals_reference(G, qk_norm, lengths, spy):
    ref, tiled = pair(qwen3(G, qk_norm))
    kpm = None if lengths is None else padding(2, 6, lengths)
    assert_tiled_equals_reference(ref, tiled, X, key_padding_mask=kpm)
    (call,) = spy
    assert call["enable_gqa"] and call["is_causal"] == (kpm is None)


@pytest.mark.parametrize(
    "make, kw",
    [
        (lambda: swa(40), {}),
        (lambda: gqa(2, 1), {"key_padding_mask": padding(1, 300, [290])}),
    ],
)
def test_tiled_equals_reference_over_several_tiles(make, kw):
    # T = 300 > the default 256-row tile: tiles outside the window or above the diagonal
    # are skipped, the others straddle its edges
    ref, tiled = pair(make())
    x = np.random.default_rng(2).standard_normal((1, 300, 5))
    assert_tiled_equals_reference(ref, tiled, x, seed=3, **kw)


@pytest.mark.parametrize("make", [lambda **kw: gqa(dropout=0.3, **kw), lambda **kw: swa(2, 0.3)])
def test_tiled_in_eval_mode_has_no_dropout(make):
    ref, tiled = pair(make())
    assert_tiled_equals_reference(ref.eval(), tiled.eval(), X)


@pytest.mark.parametrize(
    "make", [lambda: gqa(4, 2, dropout=0.25), lambda: swa(3, 0.25), lambda: qwen3(2)]
)
def test_tiled_with_dropout_matches_finite_differences(make):
    m = pair(make())[1]
    if m.__class__.__name__ == "Qwen3Attention":  # no dropout: RMSNorm scales that matter
        m.load_state_dict(dict(m.state_dict(), **{"q_norm.scale": np.linspace(0.5, 2.0, 4)}))
    x = np.random.default_rng(1).standard_normal((2, 4, 5))
    report = check_module(m, x, seed=4)
    assert report.passed, report
    if m.dropout_mask is None and getattr(m, "dropout", 0):  # the dropout really draws
        y = m(x)
        assert not np.allclose(y, m.eval()(x))


@pytest.mark.parametrize("make", [gqa, lambda **kw: swa(2, **kw), qwen3])
def test_cached_path_is_unchanged_by_tiled(make):
    ref, tiled = pair(make())
    y_full = ref.eval()(X)
    for m in (ref, tiled.eval()):
        y = np.concatenate([m(X[:, :4], use_cache=True), m(X[:, 4:], use_cache=True)], axis=1)
        np.testing.assert_allclose(y, y_full, **F64)
        assert m.attn_weights is not None  # the cached path keeps its weights


@pytest.mark.parametrize("make", [gqa, lambda **kw: swa(2, **kw), qwen3])
def test_bad_attn_impl_names_the_choices(make):
    for bad in ("blocked", "auto", "flash", None):
        with pytest.raises(ValueError, match=MODERN_IMPLS):
            make(attn_impl=bad)
    m = make(attn_impl="tiled")
    assert m.attn_impl == "tiled"
    with pytest.raises(ValueError, match=MODERN_IMPLS):
        m.attn_impl = "blocked"
    assert m.attn_impl == "tiled"
    m.attn_impl = "reference"
    assert m.attn_impl == "reference" and make().attn_impl == "reference"
    assert list(m.state_dict()) == list(make().state_dict())  # attn_impl is not a parameter


def test_chapter_classes_still_take_every_choice():
    for impl in ("reference", "blocked", "tiled", "auto"):
        assert npattn.MultiHeadAttention(4, 4, 8, 0.0, 2, attn_impl=impl).attn_impl == impl
