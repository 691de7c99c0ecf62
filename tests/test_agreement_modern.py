"""The agreement suite of the modern classes and ops: npattn against torch_port.

Modules (GroupedQueryAttention, MultiHeadLatentAttention, MultiHeadAttentionWithSWA,
Qwen3Attention as Qwen3, Llama 3 and Llama 3.1): output, dx (dx_kv) and every parameter
gradient under a random upstream gradient, float64 to 1e-10 and float32 to F32; key padding
with rows left with no key, GQA cross-attention, dropout with the same keep-mask on both sides;
cached decoding chunk by chunk (outputs, cache arrays, cache_nbytes). Ops: the RoPE tables and
both layouts, RMSNorm against torch_port's; SDPA with the sliding-window mask, soft-capping and
sinks against torch autograd (tests/modern_torch.py), L != S.

Shapes: x (B, T, d_in); H heads, G key/value heads, E head_dim; q (B, H, L, E), k (B, G, S, E).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import arrays, chunk_sizes, modern_configs, seeds
from tolerances import F32, F64

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
import modern_torch as R  # noqa: E402
from helpers import n, t, upstream  # noqa: E402
from modern_pairs import QWEN3, ROPE_SETTINGS, inputs, pair, run_both  # noqa: E402

import npattn  # noqa: E402
import torch_port as tp  # noqa: E402
from npattn import functional as F  # noqa: E402

NAMES = tp.convert.MODERN_CLASSES
WITH_DROPOUT = [name for name in NAMES if name != QWEN3]  # Qwen3 has no dropout
CACHED = [*NAMES, "MultiHeadAttention"]
CHUNKED_F64 = dict(rtol=1e-12, atol=1e-12)  # the same chunked computation on both sides
FEW = settings(max_examples=max(10, settings().max_examples // 2))  # the larger tests


@st.composite
def padding_masks(draw, B, S):
    """None, or a (B, S) key-padding mask (True = a real key) of any pattern: a sequence with
    no real key, or a first key that is padding, leaves query rows with no key at all."""
    return draw(st.one_of(st.none(), hnp.arrays(np.bool_, (B, S))))


def rope_setting(name, data):
    return data.draw(st.sampled_from(sorted(ROPE_SETTINGS))) if name == QWEN3 else "qwen3"


def assert_agree(both, tol):
    for quantity, (a, b) in both.items():
        assert a.dtype == b.dtype, quantity
        np.testing.assert_allclose(a, b, err_msg=quantity, **tol)


@pytest.mark.parametrize("name", NAMES)
@given(cfg=modern_configs(), data=st.data())
def test_every_modern_class_agrees_in_float64(name, cfg, data):
    """Group counts 1 | divisors | H, windows None, 1, in between and >= T, latent sizes,
    odd and even head dims (Qwen3: even), qkv_bias (Qwen3: qk_norm), key padding."""
    ref, port = pair(name, cfg, rope=rope_setting(name, data))
    kpm = data.draw(padding_masks(cfg["B"], cfg["T"]))
    both = run_both(ref.eval(), port.eval(), inputs(cfg), cfg["seed"], key_padding_mask=kpm)
    assert_agree(both, F64)
    np.testing.assert_allclose(ref.attn_weights, n(port.attn_weights), err_msg="weights", **F64)
    if kpm is not None:  # a query row with no key has all-zero weights on both sides
        empty = ~(ref.attn_weights > 0).any(-1)
        assert np.array_equal(empty, ~(n(port.attn_weights) > 0).any(-1))


@pytest.mark.parametrize("name", NAMES)
@given(cfg=modern_configs(), data=st.data())
def test_every_modern_class_agrees_in_float32(name, cfg, data):
    rope = rope_setting(name, data)
    ref, port = pair(name, cfg, dtype=np.float32, rope=rope, random_weights=False)
    both = run_both(ref.eval(), port.eval(), inputs(cfg, dtype=np.float32), cfg["seed"])
    assert all(a.dtype == np.float32 for a, _ in both.values())
    assert_agree(both, F32)


@FEW
@given(cfg=modern_configs(), S=st.integers(1, 6), data=st.data())
def test_gqa_cross_attention_agrees_with_dx_kv(cfg, S, data):
    """Queries from x (T), keys and values from x_kv (S != T too), not causal, key padding."""
    ref, port = pair("GroupedQueryAttention", cfg)
    x_kv = inputs(cfg, T=S, seed_offset=1)
    kpm = data.draw(padding_masks(cfg["B"], S))
    both = run_both(ref.eval(), port.eval(), inputs(cfg), cfg["seed"], x_kv=x_kv,
                    key_padding_mask=kpm)  # fmt: skip
    assert {"dx", "dx_kv"} <= set(both)
    assert_agree(both, F64)
    assert ref.attn_weights.shape[-2:] == (cfg["T"], S)


@pytest.mark.parametrize("name", WITH_DROPOUT)
@FEW
@given(cfg=modern_configs(), p=st.sampled_from([0.1, 0.5, 0.9]), data=st.data())
def test_dropout_with_the_same_keep_mask_agrees(name, cfg, p, data):
    ref, port = pair(name, cfg, dropout=p)  # training mode: npattn draws the keep-mask
    kpm = data.draw(padding_masks(cfg["B"], cfg["T"]))
    both = run_both(ref, port, inputs(cfg), cfg["seed"], key_padding_mask=kpm, same_dropout=True)
    assert ref.dropout_mask is not None and ref.dropout_mask.shape == ref.attn_weights.shape
    assert_agree(both, F64)


# --- cached decoding, chunk by chunk --------------------------------------------------------


def takes_the_cache(name):
    import inspect

    return "use_cache" in inspect.signature(getattr(npattn, name).forward).parameters


@pytest.mark.parametrize("name", CACHED)
@FEW
@given(cfg=modern_configs(), data=st.data())
def test_cached_decoding_agrees_chunk_by_chunk(name, cfg, data):
    """Each chunk's output (1e-12), the cache arrays, ptr_current_pos and cache_nbytes."""
    if not takes_the_cache(name):
        pytest.skip(f"npattn's {name} has no KV cache")
    ref, port = pair(name, cfg, rope=rope_setting(name, data))
    ref.eval(), port.eval()
    x = inputs(cfg)
    start = 0
    for size in data.draw(chunk_sizes(cfg["T"])):
        chunk = x[:, start : start + size]
        start += size
        y, ty = ref(chunk, use_cache=True), port(t(chunk), use_cache=True)
        np.testing.assert_allclose(y, n(ty), err_msg=f"chunk ending at {start}", **CHUNKED_F64)
        assert ref.ptr_current_pos == port.ptr_current_pos == start
        for key in port.CACHE_NAMES:  # SWA: at most W positions; MLA: the latent only
            cached = getattr(ref, key)
            np.testing.assert_allclose(cached, n(getattr(port, key)), err_msg=key, **CHUNKED_F64)
        assert ref.cache_nbytes == port.cache_nbytes > 0
    np.testing.assert_allclose(ref(x), n(port(t(x))), **F64)  # the full forward empties both
    assert ref.cache_nbytes == port.cache_nbytes == 0


# --- ops --------------------------------------------------------------------------------------

even_dims = st.integers(1, 3).map(lambda h: 2 * h)


def to_halves(x):
    """Interleaved pairs (2i, 2i + 1) -> split-halves pairs (i, i + E/2): a permutation."""
    return torch.cat([x[..., 0::2], x[..., 1::2]], dim=-1)


def from_halves(x):
    h = x.shape[-1] // 2
    return torch.stack([x[..., :h], x[..., h:]], dim=-1).flatten(-2)


@given(
    E=even_dims,
    T=st.integers(1, 4),
    offset=st.integers(0, 4),
    base=st.sampled_from([10.0, 10_000.0, 500_000.0]),
    freq=st.sampled_from([None, ROPE_SETTINGS["llama3.1"]["rope_freq_config"]]),
    seed=seeds,
)
def test_rope_tables_and_both_layouts_agree_with_torch_port(E, T, offset, base, freq, seed):
    """torch_port has the split-halves layout; the interleaved one is it, permuted."""
    cos, sin = F.compute_rope_params(E, base, 8, freq)
    tcos, tsin = tp.rope.compute_rope_params(E, base, 8, freq)
    np.testing.assert_allclose(cos, n(tcos), err_msg="cos", **F64)
    np.testing.assert_allclose(sin, n(tsin), err_msg="sin", **F64)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, T, E))
    g = upstream(x.shape, seed % 1000)
    rows = slice(offset, offset + T)  # the positions offset .. offset + T - 1
    for interleaved in (False, True):
        out, cache = F.rope_forward(x, cos, sin, offset, interleaved=interleaved)
        dx = F.rope_backward(g, cache)
        tx = t(x, True)
        if interleaved:
            ty = from_halves(tp.rope.apply_rope(to_halves(tx), tcos[rows], tsin[rows]))
        else:
            ty = tp.rope.apply_rope(tx, tcos[rows], tsin[rows])
        ty.backward(t(g))
        np.testing.assert_allclose(out, n(ty), err_msg=f"out {interleaved=}", **F64)
        np.testing.assert_allclose(dx, n(tx.grad), err_msg=f"dx {interleaved=}", **F64)


@given(
    x=arrays(hnp.array_shapes(min_dims=1, max_dims=4, max_side=4)),
    eps=st.sampled_from([1e-6, 1e-2]),
    dtype=st.sampled_from([np.float64, np.float32]),
    seed=seeds,
)
def test_rmsnorm_agrees_with_torch_port(x, eps, dtype, seed):
    E = x.shape[-1]
    ref = npattn.RMSNorm(E, eps, dtype=dtype)
    ref.load_state_dict({"scale": np.random.default_rng(seed).standard_normal(E).astype(dtype)})
    port = tp.RMSNorm(E, eps, dtype=torch.float32 if dtype == np.float32 else torch.float64)
    port.load_state_dict({"scale": t(ref.scale)})
    x = x.astype(dtype)
    g = upstream(x.shape, seed % 1000, dtype)
    y = ref(x)
    dx = ref.backward(g)
    tx = t(x, True)
    ty = port(tx)
    ty.backward(t(g))
    tol = F64 if dtype == np.float64 else F32
    both = {"out": (y, ty), "dx": (dx, tx.grad), "scale": (ref.grads["scale"], port.scale.grad)}
    for name, (a, b) in both.items():
        assert a.dtype == dtype, name
        np.testing.assert_allclose(a, n(b), err_msg=name, **tol)


@st.composite
def windowed_sdpa_inputs(draw, with_sinks: bool):
    """q (B, H, L, E), k (B, G, S, E), v (B, G, S, Ev) with H = G * groups, L != S too; a
    window (1, in between, >= L); soft-cap and sinks (H,) or not; key padding or not."""
    B, G, groups = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    L, S, E, Ev = (draw(st.integers(1, 5)) for _ in range(4))
    rng = np.random.default_rng(draw(seeds))
    q, k = rng.standard_normal((B, G * groups, L, E)), rng.standard_normal((B, G, S, E))
    v = rng.standard_normal((B, G, S, Ev))
    window = draw(st.integers(1, 7))
    softcap = draw(st.sampled_from([None, 0.5, 3.0]))
    sinks = rng.standard_normal(G * groups) if with_sinks else None
    return q, k, v, window, softcap, sinks, draw(padding_masks(B, S)), groups


@pytest.mark.parametrize("with_sinks", [False, True])
@given(data=st.data(), seed=seeds)
def test_sdpa_with_a_sliding_window_softcap_and_sinks_agrees_with_torch(with_sinks, data, seed):
    """The window mask equals torch_port's; rows past S + W - 1 (L > S) or left only with
    padding keys have no key: 0 out (without sinks) on both sides; dsinks included."""
    q, k, v, window, softcap, sinks, kpm, groups = data.draw(windowed_sdpa_inputs(with_sinks))
    L, S = q.shape[-2], k.shape[-2]
    mask = F.sliding_window_mask(L, S, window=window)
    port_mask = tp.kv_cache.position_keep(torch.arange(L), torch.arange(S), window)
    np.testing.assert_array_equal(mask, n(port_mask))
    if kpm is not None:
        mask = mask & kpm[:, None, None, :]  # (L, S) & (B, 1, 1, S) -> (B, 1, L, S)
    out, cache = F.sdpa_forward(q, k, v, mask, enable_gqa=True, softcap=softcap, sinks=sinks)
    g = upstream(out.shape, seed % 1000)
    grads = F.sdpa_backward(g, cache)
    tq, tk, tv = t(q, True), t(k, True), t(v, True)
    ts = None if sinks is None else t(sinks, True)
    rk, rv = tk.repeat_interleave(groups, dim=1), tv.repeat_interleave(groups, dim=1)
    ref = R.attention(tq, rk, rv, mask, softcap=softcap, sinks=ts)
    ref.backward(t(g))
    expected = [ref, tq.grad, tk.grad, tv.grad] + ([] if ts is None else [ts.grad])
    assert len(grads) == len(expected) - 1
    for name, a, b in zip(("out", "dq", "dk", "dv", "dsinks"), (out, *grads), expected):
        np.testing.assert_allclose(a, n(b), err_msg=name, **F64)
    if sinks is None:
        empty = ~np.broadcast_to(mask, out.shape[:-1] + (S,)).any(-1)
        assert np.all(out[empty] == 0)


TILED = [name for name in NAMES if name != "MultiHeadLatentAttention"]  # attn_impl="tiled"


@pytest.mark.parametrize("name", TILED)
@given(cfg=modern_configs(), data=st.data())
def test_the_tiled_modern_classes_agree_with_torch_autograd_in_float64(name, cfg, data):
    """attn_impl="tiled" (mask described to the tiled op, its recomputing backward) against
    torch_port's autograd, random upstream gradient, key padding included."""
    ref, port = pair(name, cfg, rope=rope_setting(name, data))
    ref.attn_impl = "tiled"
    kpm = data.draw(padding_masks(cfg["B"], cfg["T"]))
    both = run_both(ref.eval(), port.eval(), inputs(cfg), cfg["seed"], key_padding_mask=kpm)
    assert_agree(both, F64)
    assert ref.attn_weights is None
