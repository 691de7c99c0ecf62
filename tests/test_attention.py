"""npattn.Attention (npattn/models/attention.py): the book's bonus classes as configs (equal
numbers), central differences with every option on, cached decoding equal to the full forward
(left padding, positions, windows), the tiled and auto arrangements equal to the reference,
and invariants. Shapes: x (B, T, d) -> (B, T, d)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds
from tolerances import F64

import npattn
from npattn import Attention, AttentionConfig, QKNorm, RoPE
from npattn.gradcheck import check_module
from npattn.models.attend import AUTO_TILED_MIN_TOKENS


def _copy_weights(src, dst) -> None:
    """dst takes src's arrays by name (the classes register them in different orders)."""
    sd = src.state_dict()
    dst.load_state_dict({k: sd[k] for k in dst.state_dict()})


def _x(B, T, d, seed=0):
    return np.random.default_rng(seed).standard_normal((B, T, d))


def _attention(config, seed=0):
    """A float64 Attention whose every parameter (norm scales and sinks too) is random."""
    m = Attention(config, rng=seed).astype(np.float64)
    rng = np.random.default_rng(seed + 1)
    m.load_state_dict({k: rng.normal(0, 0.5, v.shape) for k, v in m.state_dict().items()})
    return m


@st.composite
def configs(draw, window=True, dropout=False):
    """An AttentionConfig with options drawn: GQA, biases, QK-norm, RoPE, scale, soft-cap,
    sinks, window."""
    G = draw(st.integers(1, 3))
    H = G * draw(st.integers(1, 3))
    E = 2 * draw(st.integers(1, 3))
    d = draw(st.integers(1, 8))
    rope = draw(
        st.one_of(
            st.none(),
            st.builds(
                RoPE,
                theta=st.sampled_from([10_000.0, 500_000.0]),
                fraction=st.sampled_from([1.0, 0.5]) if E % 4 == 0 else st.just(1.0),
                interleaved=st.booleans(),
            ),
        )
    )
    qk_norm = draw(
        st.one_of(
            st.none(),
            st.builds(QKNorm, width=st.sampled_from(["head", "all"]),
                      eps=st.sampled_from([1e-6, 1e-2]), offset=st.sampled_from([0.0, 1.0])),
        )
    )  # fmt: skip
    return AttentionConfig(
        hidden_size=d, num_heads=H, num_kv_heads=G, head_dim=E,
        qkv_bias=draw(st.booleans()), out_bias=draw(st.booleans()),
        dropout=draw(st.sampled_from([0.0, 0.3])) if dropout else 0.0,
        qk_norm=qk_norm, rope=rope,
        scale=draw(st.one_of(st.none(), st.floats(0.1, 2.0))),
        window=draw(st.one_of(st.none(), st.integers(1, 6))) if window else None,
        softcap=draw(st.one_of(st.none(), st.floats(0.5, 5.0))),
        sinks=draw(st.booleans()),
    )  # fmt: skip


# -- the book's bonus classes are configurations ----------------------------------------------


@given(seed=seeds, bias=st.booleans(), G=st.integers(1, 3), n=st.integers(1, 2))
def test_grouped_query_attention_is_a_config(seed, bias, G, n):
    H, E = G * n, 2
    d = H * E
    gqa = npattn.GroupedQueryAttention(d, d, 0.0, H, G, bias, rng=seed).astype(np.float64)
    cfg = AttentionConfig(hidden_size=d, num_heads=H, num_kv_heads=G, qkv_bias=bias)
    m = Attention(cfg).astype(np.float64)
    _copy_weights(gqa, m)
    x = _x(2, 5, d, seed % 7)
    np.testing.assert_allclose(m(x), gqa(x), **F64)
    g = np.random.default_rng(seed % 5).standard_normal((2, 5, d))
    np.testing.assert_allclose(m.backward(g), gqa.backward(g), **F64)
    for k, v in gqa.grads.items():
        np.testing.assert_allclose(m.grads[k], v, **F64, err_msg=k)


@given(seed=seeds, window=st.one_of(st.none(), st.integers(1, 6)))
def test_sliding_window_attention_is_a_config(seed, window):
    d, H = 6, 3
    swa = npattn.MultiHeadAttentionWithSWA(d, d, 0.0, H, True, window, rng=seed)
    swa.astype(np.float64)
    cfg = AttentionConfig(d, H, qkv_bias=True, out_bias=True, window=window)
    m = Attention(cfg).astype(np.float64)
    _copy_weights(swa, m)
    x = _x(2, 7, d, seed % 11)
    np.testing.assert_allclose(m(x), swa(x), **F64)
    # and decoding: the window's cache holds the last W tokens in both
    steps = [m(x[:, :3], use_cache=True)] + [
        m(x[:, t : t + 1], use_cache=True) for t in range(3, 7)
    ]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), swa(x), **F64)


@given(seed=seeds, qk_norm=st.booleans(), E=st.sampled_from([2, 4]))
def test_qwen3_attention_is_a_config(seed, qk_norm, E):
    d, H, G = 8, 4, 2
    qwen = npattn.Qwen3Attention(d, H, G, E, qk_norm, context_length=32, rng=seed)
    qwen.astype(np.float64)
    cfg = AttentionConfig(
        d, H, G, E, qk_norm=QKNorm(eps=1e-6) if qk_norm else None, rope=RoPE(theta=1e6)
    )
    m = Attention(cfg).astype(np.float64)
    rng = np.random.default_rng(seed % 13)
    qwen.load_state_dict({k: rng.normal(0, 0.5, v.shape) for k, v in qwen.state_dict().items()})
    _copy_weights(qwen, m)
    x = _x(2, 6, d, seed % 3)
    np.testing.assert_allclose(m(x), qwen(x), **F64)
    g = rng.standard_normal((2, 6, d))
    np.testing.assert_allclose(m.backward(g), qwen.backward(g), **F64)
    for k, v in qwen.grads.items():
        np.testing.assert_allclose(m.grads[k], v, **F64, err_msg=k)


# -- central differences with every option on --------------------------------------------


@pytest.mark.parametrize("width", ["head", "all"])
def test_gradcheck_every_option(width):
    cfg = AttentionConfig(
        hidden_size=6, num_heads=4, num_kv_heads=2, head_dim=4, qkv_bias=True, out_bias=True,
        qk_norm=QKNorm(width=width, eps=1e-5, offset=1.0), rope=RoPE(fraction=0.5),
        scale=0.7, window=3, softcap=2.0, sinks=True,
    )  # fmt: skip
    m = _attention(cfg, seed=3)
    report = check_module(m, _x(2, 5, 6, 4))
    assert report.passed, report
    assert {r.name for r in report} >= {"x", "sinks", "q_norm.scale", "k_norm.scale"}


def test_gradcheck_key_padding_and_positions():
    cfg = AttentionConfig(4, 2, 1, 4, rope=RoPE(interleaved=True), sinks=True, softcap=3.0)
    m = _attention(cfg, seed=5)
    x = _x(2, 4, 4, 6)
    kpm = np.array([[False, True, True, True], [True, True, True, True]])
    positions = np.array([[0, 0, 1, 2], [5, 6, 7, 8]])

    report = check_module(m, x, forward_kwargs=dict(positions=positions, key_padding_mask=kpm))
    assert report.passed, report


# -- cached decoding equals the full forward ---------------------------------------------------


@given(cfg=configs(), seed=seeds, chunks=st.lists(st.integers(1, 3), min_size=1, max_size=4))
def test_decoding_in_chunks_equals_the_full_forward(cfg, seed, chunks):
    m = _attention(cfg, seed % 1000)
    T = sum(chunks)
    x = _x(2, T, cfg.hidden_size, seed % 17)
    full = m(x)
    outs, t = [], 0
    for n in chunks:
        outs.append(m(x[:, t : t + n], use_cache=True))
        t += n
    np.testing.assert_allclose(np.concatenate(outs, axis=1), full, **F64)
    assert m.ptr_current_pos == T


@given(cfg=configs(), seed=seeds, pads=st.lists(st.integers(0, 3), min_size=2, max_size=2))
def test_left_padded_batch_prefills_then_decodes(cfg, seed, pads):
    """Each sequence, left-padded in a batch and decoded, equals it run alone."""
    m = _attention(cfg, seed % 1000)
    real, decode = 3, 2
    T = max(pads) + real
    d = cfg.hidden_size
    rng = np.random.default_rng(seed % 19)
    seqs = [rng.standard_normal((real + decode, d)) for _ in pads]
    x = np.zeros((2, T + decode, d))
    kpm = np.zeros((2, T + decode), dtype=bool)
    for b, seq in enumerate(seqs):
        lead = T - real  # left padding up to the longest prompt
        x[b, lead:] = seq
        kpm[b, lead:] = True
    positions = np.maximum(np.cumsum(kpm, axis=1) - 1, 0)  # (B, T + decode), 0 on padding
    out = [m(x[:, :T], True, positions=positions[:, :T], key_padding_mask=kpm[:, :T])]
    for t in range(T, T + decode):
        out.append(
            m(
                x[:, t : t + 1],
                True,
                positions=positions[:, t : t + 1],
                key_padding_mask=kpm[:, : t + 1],
            )
        )
    out = np.concatenate(out, axis=1)
    for b, seq in enumerate(seqs):
        alone = m(seq[None])  # no padding, positions 0 ..
        np.testing.assert_allclose(out[b, T - real :], alone[0], **F64)


def test_positions_shift_invariance_and_gaps():
    """RoPE depends on positions only through differences: positions p .. p + T - 1 give the
    plain forward's numbers for any p; positions with a gap do not."""
    cfg = AttentionConfig(8, 4, 2, 4, rope=RoPE(theta=10.0))
    m = _attention(cfg, 1)
    x = _x(2, 4, 8, 2)
    plain = m(x)
    np.testing.assert_allclose(m(x, positions=np.arange(5, 9)), plain, **F64)
    per_sequence = np.array([[0, 1, 2, 3], [7, 8, 9, 10]])
    np.testing.assert_allclose(m(x, positions=per_sequence), plain, **F64)
    gap = m(x, positions=np.array([0, 1, 2, 6]))
    np.testing.assert_allclose(gap[:, :3], plain[:, :3], **F64)
    assert not np.allclose(gap[:, 3], plain[:, 3])


# -- the tiled and auto arrangements equal the reference -------------------------------------


@given(cfg=configs(), seed=seeds, T=st.integers(1, 9), padded=st.booleans())
@pytest.mark.parametrize("blocks", [(256, 256), (2, 3)])
def test_tiled_equals_reference(blocks, cfg, seed, T, padded):
    """Every option on the tiled path equals the reference, with one tile, or with tiles of
    2 x 3 so several query and key blocks run (and some are skipped outside the window)."""
    import npattn.fast.tiled as tiled

    m = _attention(cfg, seed % 1000)
    x = _x(2, T, cfg.hidden_size, seed % 23)
    kpm = None
    if padded:
        kpm = np.random.default_rng(seed % 29).random((2, T)) > 0.3
    g = np.random.default_rng(seed % 31).standard_normal((2, T, cfg.hidden_size))
    ref = m(x, key_padding_mask=kpm)
    dx = m.backward(g)
    grads = m.grads
    m.attn_impl = "tiled"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tiled, "DEFAULT_BLOCKS", blocks)
        np.testing.assert_allclose(m(x, key_padding_mask=kpm), ref, **F64)
        np.testing.assert_allclose(m.backward(g), dx, **F64)
    for k, v in grads.items():
        np.testing.assert_allclose(m.grads[k], v, **F64, err_msg=k)


# -- invariants ------------------------------------------------------------------------------


@given(cfg=configs(), seed=seeds)
def test_causal_a_later_token_never_changes_an_earlier_output(cfg, seed):
    m = _attention(cfg, seed % 1000)
    x = _x(1, 5, cfg.hidden_size, seed % 37)
    y = x.copy()
    y[:, 3:] += 10.0
    np.testing.assert_allclose(m(y)[:, :3], m(x)[:, :3], **F64)


def test_window_limits_what_a_query_sees():
    cfg = AttentionConfig(4, 2, window=2)
    m = _attention(cfg, 2)
    x = _x(1, 6, 4, 3)
    y = x.copy()
    y[:, 0] += 5.0  # token 0 is outside the window of queries 2 ..
    np.testing.assert_allclose(m(y)[:, 2:], m(x)[:, 2:], **F64)
    assert not np.allclose(m(y)[:, 1], m(x)[:, 1])


def test_sinks_take_a_share_of_each_row():
    m = _attention(AttentionConfig(4, 2, sinks=True), 0)
    m(_x(1, 3, 4))
    sums = m.attn_weights.sum(-1)
    assert np.all(sums < 1) and np.all(sums > 0)


# -- the configuration is the one source of truth ----------------------------------------


def test_rebuilt_from_its_config_and_state_dict():
    cfg = AttentionConfig(6, 4, 2, 4, True, True, 0.0, QKNorm("all", 1e-3, 1.0),
                          RoPE(theta=123.0, fraction=0.5), 0.3, 4, 7.0, True)  # fmt: skip
    m = _attention(cfg, 9)
    twin = type(m)(m.config)
    twin.astype(np.float64).load_state_dict(m.state_dict())
    x = _x(2, 5, 6)
    np.testing.assert_array_equal(twin(x), m(x))
    assert twin.config == cfg


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(hidden_size=0, num_heads=1), ValueError, "hidden_size"),
        (dict(hidden_size=4, num_heads=3), ValueError, "divisible"),
        (dict(hidden_size=4, num_heads=4, num_kv_heads=3), ValueError, "num_kv_heads"),
        (dict(hidden_size=4, num_heads=2, window=0), ValueError, "window"),
        (dict(hidden_size=4, num_heads=2, softcap=-1.0), ValueError, "softcap"),
        (dict(hidden_size=4, num_heads=2, scale=float("nan")), ValueError, "scale"),
        (dict(hidden_size=4, num_heads=2, sinks="yes"), TypeError, "sinks"),
        (dict(hidden_size=4, num_heads=2, qk_norm="head"), TypeError, "qk_norm"),
        (dict(hidden_size=4, num_heads=2, rope={"theta": 1.0}), TypeError, "rope"),
        (dict(hidden_size=6, num_heads=2, rope=RoPE()), ValueError, "even"),
        (dict(hidden_size=4, num_heads=2, dropout=1.5), ValueError, "dropout"),
        (dict(hidden_size=4, num_heads=2, causal=False, window=2), ValueError, "window"),
    ],
)
def test_config_errors_name_the_field(kwargs, error, words):
    with pytest.raises(error, match=words):
        AttentionConfig(**kwargs)


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda m, x: m(x[0]), ValueError, "x must have shape"),
        (lambda m, x: m(x, positions=np.arange(2)), ValueError, "positions"),
        (lambda m, x: m(x, positions=np.arange(3.0)), TypeError, "integers"),
        (lambda m, x: m(x, positions=-np.arange(3)), ValueError, ">= 0"),
        (lambda m, x: m(x, key_padding_mask=np.ones((2, 3))), TypeError, "boolean"),
        (lambda m, x: m(x, key_padding_mask=np.ones((2, 2), bool)), ValueError, "S=3"),
        (lambda m, x: m(x, use_cache=1), TypeError, "use_cache"),
    ],
)
def test_call_errors_change_nothing(call, error, words):
    m = _attention(AttentionConfig(4, 2, rope=RoPE()), 0)
    x = _x(2, 3, 4)
    g = np.random.default_rng(1).standard_normal((2, 3, 4))
    m(x)
    with pytest.raises(error, match=words):
        call(m, x)
    dx = m.backward(g)  # the failed call left the earlier forward's backward intact
    m(x)
    np.testing.assert_array_equal(m.backward(g), dx)


@pytest.mark.parametrize("T", [3, AUTO_TILED_MIN_TOKENS - 1, AUTO_TILED_MIN_TOKENS])
def test_auto_is_the_reference_below_its_switch_and_tiled_from_there(T):
    cfg = AttentionConfig(8, 4, 2, rope=RoPE(), softcap=20.0, sinks=True, window=40)
    m = _attention(cfg, 4)
    x = _x(1, T, 8, 5)
    ref = m(x)
    m.attn_impl = "auto"
    np.testing.assert_allclose(m(x), ref, **F64)
    assert (m.attn_weights is None) == (T >= AUTO_TILED_MIN_TOKENS)  # tiled forms no weights


# -- hostile use ------------------------------------------------------------------------


def test_a_child_called_between_forward_and_backward_is_refused():
    """m.out_proj(y) replaces out_proj's cache: the parent's backward refuses rather than
    using it, and no gradient is written."""
    m = _attention(AttentionConfig(8, 2, rope=RoPE()), 0)
    x, g = _x(2, 3, 8), _x(2, 3, 8, 1)
    m(x)
    m.backward(g)
    before = {k: v.copy() for k, v in m.grads.items()}
    m(x * 2)
    m.out_proj(_x(2, 3, 8, 2))
    with pytest.raises(RuntimeError, match="child 'out_proj' ran another forward"):
        m.backward(g)
    for k, v in before.items():
        np.testing.assert_array_equal(m.grads[k], v)


def test_cross_attention_refuses_a_window_and_decoding_needs_causal():
    m = _attention(AttentionConfig(8, 2, window=2), 0)
    with pytest.raises(ValueError, match="x_kv .* window"):
        m(_x(1, 3, 8), x_kv=_x(1, 4, 8))
    bidirectional = _attention(AttentionConfig(8, 2, causal=False), 0)
    with pytest.raises(ValueError, match="use_cache=True needs a causal layer"):
        bidirectional(_x(1, 3, 8), use_cache=True)


def test_numpy_integer_sizes_do_not_wrap():
    cfg = AttentionConfig(64, np.uint8(16), head_dim=np.uint8(17))
    assert type(cfg.num_heads) is int and type(cfg.head_dim) is int
    assert Attention(cfg).W_query.weight.shape == (16 * 17, 64)


def test_the_config_is_read_only_and_checked_whole():
    m = Attention(AttentionConfig(8, 2))
    with pytest.raises(AttributeError):
        m.config = AttentionConfig(8, 4)
    with pytest.raises(ValueError, match="R >= 4"):  # the scaling checked with the head dim
        AttentionConfig(8, 4, rope=RoPE(scaling=npattn.DynamicNTK(2.0, 4)))


def test_positions_too_large_or_past_qwen3_context_are_refused():
    m = _attention(AttentionConfig(8, 2, rope=RoPE()), 0)
    with pytest.raises(ValueError, match="2\\*\\*62"):
        m(_x(1, 2, 8), positions=np.array([2**63, 1], dtype=np.uint64))
    q = npattn.Qwen3Attention(8, 2, 1, context_length=16, rng=0)
    with pytest.raises(ValueError, match="context_length=16"):
        q(_x(1, 2, 8), positions=np.array([3, 10**6]))


def test_torch_port_mirror_keeps_d_out():
    torch_port = pytest.importorskip("torch_port")
    cfg = AttentionConfig(16, 4, d_out=7)
    m = _attention(cfg, 0)
    tm = torch_port.from_npattn(m)
    assert tuple(tm.out_proj.weight.shape) == (7, 16)
    import torch

    x = _x(1, 3, 16)
    np.testing.assert_allclose(tm(torch.tensor(x)).detach().numpy(), m(x), **F64)
