"""torch_port's modern classes (GQA, MLA, sliding window, Qwen3) and the KV cache of every
cached class, in float64, against formulations written independently here: torch SDPA with
enable_gqa and explicit tril/triu masks, RoPE as complex rotations (torch.polar), RMSNorm as
torch.nn.functional.rms_norm. Outputs and autograd gradients agree to 1e-10; decoding in
chunks of any sizes gives the full forward to 1e-12.

Shapes: x (B, T, d_in); H heads, G key/value heads, E head_dim, C latent_dim, W window.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import modern_configs, modern_constructor_args
from tolerances import F64

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
import torch.nn.functional as F  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

import torch_port as tp  # noqa: E402

CHUNKED_F64 = dict(rtol=1e-12, atol=1e-12)  # cached decoding vs the full forward
MODERN = ["GroupedQueryAttention", "MultiHeadLatentAttention", "MultiHeadAttentionWithSWA"]
MODERN += ["Qwen3Attention"]
CACHED = MODERN + ["MultiHeadAttention"]
CONTEXT = 8  # context_length of the classes that have one (modern_configs)
FIXED = dict(B=2, T=3, d_in=3, G=1, H=2, E=2, C=2, W=2, bias=True, rope_base=1e4, seed=0)
FIXED["context_length"] = CONTEXT


def make(name, cfg):
    """A float64 torch_port module in eval mode, seeded; Qwen3's norm scales made random."""
    torch.manual_seed(cfg["seed"])
    args, kwargs = modern_constructor_args(name, cfg)
    if name == "MultiHeadAttention":
        m = tp.MultiHeadAttention(*args).double()
    else:
        m = getattr(tp, name)(*args, **kwargs, dtype=torch.float64)
    if name == "Qwen3Attention" and m.q_norm is not None:
        with torch.no_grad():
            m.q_norm.scale.normal_()
            m.k_norm.scale.normal_()
    return m.eval()


def inputs(cfg, T=None, S=None):
    g = torch.Generator().manual_seed(cfg["seed"] + 1)
    x = torch.randn(cfg["B"], T or cfg["T"], cfg["d_in"], generator=g, dtype=torch.float64)
    if S is None:
        return x
    return x, torch.randn(cfg["B"], S, cfg["d_in"], generator=g, dtype=torch.float64)


# --- the independent formulations --------------------------------------------------------


def split(y, n):  # (B, T, n * E) -> (B, n, T, E)
    return y.unflatten(-1, (n, -1)).transpose(1, 2)


def merge(y):  # (B, n, T, E) -> (B, T, n * E)
    return y.transpose(1, 2).flatten(2)


def sdpa(q, k, v, keep):
    """Torch SDPA, math backend, boolean mask True = attend; key heads repeat_interleaved."""
    with sdpa_kernel([SDPBackend.MATH]):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=True)


def causal_keep(T, S, window=None):
    """(T, S) True = attend: on or below the diagonal, and (window) above the W-th below."""
    keep = torch.ones(T, S, dtype=torch.bool).tril()
    if window is not None:
        keep &= ~torch.ones(T, S, dtype=torch.bool).tril(diagonal=-window)
    return keep


def rope_complex(x, base):
    """Split-halves RoPE as complex multiplication: (x_i + i x_{i+E/2}) e^{i pos theta_i}."""
    T, E = x.shape[-2], x.shape[-1]
    theta = base ** (-torch.arange(0, E, 2, dtype=torch.float64) / E)  # (E/2,)
    angles = torch.arange(T, dtype=torch.float64)[:, None] * theta  # (T, E/2)
    z = torch.complex(x[..., : E // 2], x[..., E // 2 :]) * torch.polar(
        torch.ones_like(angles), angles
    )
    return torch.cat([z.real, z.imag], dim=-1)


def reference(name, m, x, keep_pad=None, x_kv=None):
    """The module's output computed from its parameters by the formulations above."""
    src = x if x_kv is None else x_kv
    T, S = x.shape[1], src.shape[1]
    W = getattr(m, "sliding_window_size", None)
    keep = causal_keep(T, S, W)[None, None] if x_kv is None else torch.ones(1, 1, T, S) > 0
    if keep_pad is not None:
        keep = keep & keep_pad[:, None, None, :]  # (B, 1, T, S)
    H = m.num_heads
    q = split(F.linear(x, m.W_query.weight, m.W_query.bias), H)
    if name == "MultiHeadLatentAttention":
        c = F.linear(src, m.W_DKV.weight, m.W_DKV.bias)  # (B, S, C)
        k = split(F.linear(c, m.W_UK.weight, m.W_UK.bias), H)
        v = split(F.linear(c, m.W_UV.weight, m.W_UV.bias), H)
    else:
        G = getattr(m, "num_kv_groups", H)
        k = split(F.linear(src, m.W_key.weight, m.W_key.bias), G)
        v = split(F.linear(src, m.W_value.weight, m.W_value.bias), G)
    if name == "Qwen3Attention":
        if m.q_norm is not None:
            q = F.rms_norm(q, (m.head_dim,), m.q_norm.scale, eps=1e-6)
            k = F.rms_norm(k, (m.head_dim,), m.k_norm.scale, eps=1e-6)
        q, k = rope_complex(q, m.rope_base), rope_complex(k, m.rope_base)
    return F.linear(merge(sdpa(q, k, v, keep)), m.out_proj.weight, m.out_proj.bias)


def outputs_and_grads(fn, m, x, g):
    """fn's output and the autograd gradients of sum(out * g) for x and every parameter."""
    x = x.clone().requires_grad_(True)
    params = [x, *m.parameters()]
    out = fn(x)
    return out, torch.autograd.grad(out, params, g, allow_unused=True)


def assert_agree(name, m, x, **kw):
    g = torch.randn(x.shape[:2] + (m.out_proj.weight.shape[0],), dtype=torch.float64)
    got = outputs_and_grads(lambda x: m(x, **kw), m, x, g)
    exp = outputs_and_grads(lambda x: reference(name, m, x, **kw_ref(kw)), m, x, g)
    torch.testing.assert_close(got[0], exp[0], **F64, msg=lambda s: f"output: {s}")
    names = ["x", *(n for n, _ in m.named_parameters())]
    for key, a, b in zip(names, got[1], exp[1]):
        assert torch.isfinite(a).all(), key
        torch.testing.assert_close(a, b, **F64, msg=lambda s, key=key: f"d{key}: {s}")


def kw_ref(kw):
    return {"keep_pad": kw.get("key_padding_mask"), "x_kv": kw.get("x_kv")}


# --- agreement -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODERN)
@given(cfg=modern_configs())
def test_output_and_gradients_match_independent_formulation(name, cfg):
    assert_agree(name, make(name, cfg), inputs(cfg))


@pytest.mark.parametrize("name", MODERN)
@given(cfg=modern_configs(), data=st.data())
def test_key_padding_mask_including_rows_with_no_key(name, cfg, data):
    m, x = make(name, cfg), inputs(cfg)
    B, T = cfg["B"], cfg["T"]
    pad = data.draw(st.lists(st.booleans(), min_size=B * T, max_size=B * T))
    pad = torch.tensor(pad).view(B, T)  # (B, S), True = attend
    assert_agree(name, m, x, key_padding_mask=pad)
    keep = pad[:, None, :] & causal_keep(T, T, getattr(m, "sliding_window_size", None))
    empty = ~keep.any(-1)  # (B, T): query rows left with no key
    m(x, key_padding_mask=pad)
    assert (m.attn_weights.transpose(1, 2)[empty] == 0).all()  # (n, H, S) of zeros


@given(cfg=modern_configs(), S=st.integers(1, 6), data=st.data())
def test_gqa_cross_attention_is_bidirectional_over_x_kv(cfg, S, data):
    m = make("GroupedQueryAttention", cfg)
    x, x_kv = inputs(cfg, S=S)
    pad = torch.tensor(
        data.draw(st.lists(st.booleans(), min_size=cfg["B"] * S, max_size=cfg["B"] * S))
    )
    assert_agree("GroupedQueryAttention", m, x, x_kv=x_kv)
    assert_agree("GroupedQueryAttention", m, x, x_kv=x_kv, key_padding_mask=pad.view(-1, S))


# --- special cases equal the chapter's MultiHeadAttention ---------------------------------


def chapter_mha(cfg, state):
    """torch_port.MultiHeadAttention (float64) loaded with `state`; missing keys must be mask."""
    mha = make("MultiHeadAttention", cfg)
    missing, unexpected = mha.load_state_dict(state, strict=False)
    assert set(missing) <= {"mask", "out_proj.bias"} and not unexpected
    return mha


@given(cfg=modern_configs())
def test_gqa_with_one_group_per_head_is_mha(cfg):
    cfg = {**cfg, "G": cfg["H"]}
    gqa = make("GroupedQueryAttention", cfg)
    mha = chapter_mha(cfg, gqa.state_dict())
    torch.nn.init.zeros_(mha.out_proj.bias)  # GQA's out_proj has no bias
    x = inputs(cfg)
    torch.testing.assert_close(gqa(x), mha(x), **F64)


@given(cfg=modern_configs(), extra=st.integers(0, 3))
def test_swa_with_a_window_of_at_least_t_is_causal_mha(cfg, extra):
    cfg = {**cfg, "W": cfg["T"] + extra}
    swa = make("MultiHeadAttentionWithSWA", cfg)
    x = inputs(cfg)
    torch.testing.assert_close(swa(x), chapter_mha(cfg, swa.state_dict())(x), **F64)


@given(cfg=modern_configs())
def test_mla_is_mha_with_factored_key_and_value_weights(cfg):
    cfg = {**cfg, "bias": False}
    mla = make("MultiHeadLatentAttention", cfg)
    state = {
        "W_query.weight": mla.W_query.weight,
        "W_key.weight": mla.W_UK.weight @ mla.W_DKV.weight,  # (d_out, C) @ (C, d_in)
        "W_value.weight": mla.W_UV.weight @ mla.W_DKV.weight,
        "out_proj.weight": mla.out_proj.weight,
        "out_proj.bias": mla.out_proj.bias,
    }
    x = inputs(cfg)
    torch.testing.assert_close(mla(x), chapter_mha(cfg, state)(x), **F64)


# --- KV cache: chunked decoding is the full forward -----------------------------------------


def decode(m, x, sizes):
    """m over x fed in chunks of the given sizes with the cache, outputs concatenated."""
    outs, start = [], 0
    for n in sizes:
        outs.append(m(x[:, start : start + n], use_cache=True))
        start += n
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("name", CACHED)
@given(cfg=modern_configs(), data=st.data())
def test_chunks_of_any_sizes_give_the_full_forward(name, cfg, data):
    m, x = make(name, cfg), inputs(cfg)
    cuts = data.draw(st.sets(st.integers(1, cfg["T"] - 1)) if cfg["T"] > 1 else st.just(set()))
    edges = [0, *sorted(cuts), cfg["T"]]
    full = m(x)
    got = decode(m, x, [b - a for a, b in zip(edges, edges[1:])])
    torch.testing.assert_close(got, full, **CHUNKED_F64)
    assert m.ptr_current_pos == cfg["T"]


@pytest.mark.parametrize("name", CACHED)
@pytest.mark.parametrize("size", [1, 2])
@given(cfg=modern_configs())
def test_chunks_of_one_or_two_tokens_give_the_full_forward(name, size, cfg):
    m, x = make(name, {**cfg, "T": 6}), inputs({**cfg, "T": 6})
    full = m(x)
    torch.testing.assert_close(decode(m, x, [size] * (6 // size)), full, **CHUNKED_F64)
    m(x[:, :1])  # a forward without the cache empties it
    assert m.ptr_current_pos == 0 and m.cache_nbytes == 0


def cache_shapes(name, m, cfg, n):
    """The cache tensors' shapes after n tokens: only what each class needs."""
    B, G, H, E = cfg["B"], cfg["G"], cfg["H"], cfg["E"]
    return {
        "GroupedQueryAttention": {"cache_k": (B, G, n, E), "cache_v": (B, G, n, E)},
        "MultiHeadLatentAttention": {"cache_c_kv": (B, n, cfg["C"])},
        "MultiHeadAttentionWithSWA": {
            k: (B, H, n if cfg["W"] is None else min(n, cfg["W"]), E)
            for k in ("cache_k", "cache_v")
        },
        "Qwen3Attention": {"cache_k": (B, G, n, 2 * E), "cache_v": (B, G, n, 2 * E)},
        "MultiHeadAttention": {"cache_k": (B, H, n, E), "cache_v": (B, H, n, E)},
    }[name]


@pytest.mark.parametrize("name", CACHED)
@given(cfg=modern_configs(), sizes=st.lists(st.integers(1, 2), min_size=1, max_size=4))
def test_cache_holds_only_what_it_must_and_counts_its_bytes(name, cfg, sizes):
    m = make(name, cfg)
    x = inputs(cfg, T=sum(sizes))
    assert m.cache_nbytes == 0
    n = 0
    for size in sizes:
        old = 0 if m.CACHE_NAMES[0] != "cache_k" or m.cache_k is None else m.cache_k.shape[2]
        m(x[:, n : n + size], use_cache=True)
        n += size
        shapes = cache_shapes(name, m, cfg, n)
        assert {k: tuple(getattr(m, k).shape) for k in m.CACHE_NAMES} == shapes
        elements = sum(torch.Size(s).numel() for s in shapes.values())
        assert m.cache_nbytes == 8 * elements  # float64
        if name == "MultiHeadAttentionWithSWA" and cfg["W"] is not None:
            # a chunk attends to its own keys and at most W - 1 older ones
            assert m.attn_weights.shape[-1] == min(old + size, cfg["W"] + size - 1)


# --- errors leave the cache as it was ------------------------------------------------------


def snapshot(m):
    return m.ptr_current_pos, [getattr(m, k) for k in m.CACHE_NAMES]


def assert_unchanged(m, before):
    ptr, tensors = snapshot(m)
    assert ptr == before[0]
    for a, b in zip(tensors, before[1]):
        assert a is b


@pytest.mark.parametrize("name", CACHED)
def test_batch_mismatch_raises_and_leaves_the_cache(name):
    cfg = FIXED
    m, x = make(name, cfg), inputs(cfg)
    m(x, use_cache=True)
    before = snapshot(m)
    with pytest.raises(ValueError, match="batch size"):
        m(x[:1, :1], use_cache=True)
    assert_unchanged(m, before)
    if name != "MultiHeadAttention":  # the chapter's class takes no key_padding_mask
        with pytest.raises(ValueError, match="key_padding_mask"):
            m(x[:, :1], use_cache=True, key_padding_mask=torch.ones(2, 1, dtype=torch.bool))
        assert_unchanged(m, before)
    m.reset_cache()
    assert m.ptr_current_pos == 0 and m.cache_nbytes == 0
    m(x[:1, :1], use_cache=True)  # a new batch size after reset_cache is fine


@pytest.mark.parametrize("name", ["Qwen3Attention", "MultiHeadAttention"])
def test_running_past_context_length_raises_and_leaves_the_cache(name):
    cfg = dict(FIXED, B=1, T=CONTEXT)
    m, x = make(name, cfg), inputs(cfg)
    m(x[:, :5], use_cache=True)
    before = snapshot(m)
    with pytest.raises(ValueError, match="context_length"):
        m(x[:, :4], use_cache=True)
    assert_unchanged(m, before)
    m(x[:, 5:], use_cache=True)  # exactly up to context_length is fine


def test_gqa_cross_attention_refuses_the_cache():
    cfg = FIXED
    m, x = make("GroupedQueryAttention", cfg), inputs(cfg)
    with pytest.raises(ValueError, match="x_kv"):
        m(x, use_cache=True, x_kv=x)
    with pytest.raises(ValueError, match="x_kv"):
        m(x, x_kv=x[:, :, :2])


# --- construction ------------------------------------------------------------------------


def test_weights_are_nn_linear_created_in_the_books_order():
    """Same seed, same weights as nn.Linear layers created in the book's order."""
    torch.manual_seed(7)
    m = tp.GroupedQueryAttention(5, 8, 0.0, 4, 2, qkv_bias=True)
    torch.manual_seed(7)
    layers = [torch.nn.Linear(5, 4), torch.nn.Linear(5, 4), torch.nn.Linear(5, 8)]
    layers.append(torch.nn.Linear(8, 8, bias=False))
    expected = [p for layer in layers for p in layer.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), expected))
    assert list(m.state_dict()) == [
        "W_key.weight", "W_key.bias", "W_value.weight", "W_value.bias",
        "W_query.weight", "W_query.bias", "out_proj.weight",
    ]  # fmt: skip


def test_defaults_dtypes_and_state_dict_keys():
    mla = tp.MultiHeadLatentAttention(4, 8, 0.0, 2)
    assert mla.latent_dim == 16 and mla.W_DKV.weight.dtype == torch.float32
    assert tp.MultiHeadLatentAttention(4, 256, 0.0, 2).latent_dim == 32
    qwen = tp.Qwen3Attention(8, 2, 1, dtype=torch.float64)
    assert qwen.head_dim == 4 and qwen.W_query.weight.dtype == torch.float64
    assert qwen.rope_base == 1_000_000.0 and qwen.context_length == 4096
    assert list(qwen.state_dict()) == [
        "W_query.weight", "W_key.weight", "W_value.weight", "out_proj.weight",
        "q_norm.scale", "k_norm.scale",
    ]  # fmt: skip
    llama = tp.Qwen3Attention(8, 2, 1, qk_norm=False, rope_base=500_000.0)
    assert llama.q_norm is None and "q_norm.scale" not in llama.state_dict()
    swa = tp.MultiHeadAttentionWithSWA(4, 4, 0.0, 2, sliding_window_size=3)
    assert list(swa.state_dict())[-2:] == ["out_proj.weight", "out_proj.bias"]
    with pytest.raises(ValueError, match="sliding_window_size"):
        tp.MultiHeadAttentionWithSWA(4, 4, 0.0, 2, sliding_window_size=0)
    with pytest.raises(ValueError, match="num_kv_groups"):
        tp.GroupedQueryAttention(4, 6, 0.0, 3, 2)
    with pytest.raises(ValueError, match="even"):
        tp.Qwen3Attention(6, 2, 1)


def test_rmsnorm_keeps_low_precision_dtypes_and_computes_in_float32():
    norm = tp.RMSNorm(4)
    x = torch.randn(3, 4, dtype=torch.bfloat16)
    expected = F.rms_norm(x.float(), (4,), norm.scale, eps=1e-6).to(torch.bfloat16)
    assert norm(x).dtype == torch.bfloat16 and torch.equal(norm(x), expected)


@given(base=st.sampled_from([10.0, 500_000.0]), factor=st.floats(1.5, 32.0))
def test_llama31_frequency_scaling_divides_only_the_long_wavelengths(base, factor):
    """theta_i read back from position 1's angle: short wavelengths unchanged, long ones /factor,
    and factor-free configs (factor 1) change nothing."""
    E, orig = 16, 64
    cfg = dict(
        factor=factor, low_freq_factor=1.0, high_freq_factor=4.0, original_context_length=orig
    )
    plain = tp.Qwen3Attention(E, 1, 1, qk_norm=False, rope_base=base, context_length=2)
    scaled = tp.Qwen3Attention(
        E, 1, 1, qk_norm=False, rope_base=base, context_length=2, rope_freq_config=cfg
    )
    theta = torch.atan2(plain.sin[1, : E // 2], plain.cos[1, : E // 2])
    got = torch.atan2(scaled.sin[1, : E // 2], scaled.cos[1, : E // 2])
    wavelen = 2 * torch.pi / theta
    short, long = wavelen < orig / 4.0, wavelen > orig / 1.0
    torch.testing.assert_close(got[short], theta[short], **F64)
    torch.testing.assert_close(got[long], theta[long] / factor, **F64)
    assert ((got <= theta) & (got >= theta / factor - 1e-15)).all()
    same = tp.Qwen3Attention(
        E, 1, 1, qk_norm=False, rope_base=base, context_length=2,
        rope_freq_config={**cfg, "factor": 1.0},
    )  # fmt: skip
    torch.testing.assert_close(same.cos, plain.cos, **F64)


@pytest.mark.parametrize(
    "path", ["modules", "modern", "gqa", "mla", "swa", "qwen3", "rope", "kv_cache"]
)
def test_the_classes_do_not_import_npattn(path):
    """Only torch_port.convert and the testing kit may import npattn: the classes stand alone."""
    import ast
    import pathlib

    source = pathlib.Path(tp.__file__).with_name(f"{path}.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        assert not any(n.split(".")[0] == "npattn" for n in names), (path, names)
