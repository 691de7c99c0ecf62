"""npattn.LatentAttention (DeepSeek-V2/V3 multi-head latent attention, decoupled RoPE) against
its torch mirror (torch_port.LatentAttention, autograd) in float64, central differences,
cached decoding in the absorbed form, and transformers' DeepseekV3Attention itself.

Shapes: x (B, T, d); H heads, C = kv_lora_rank, Cq = q_lora_rank, Dn, Dr, Dv the nope, rope
and value head dims.
"""

import contextlib

import numpy as np
import pytest
from tolerances import F64, FD

import npattn
from npattn.gradcheck import check_module
from npattn.ops.rope_config import yarn_get_mscale

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
import torch_port as tp  # noqa: E402

CHUNKED_F64 = dict(rtol=1e-12, atol=1e-12)  # cached decoding vs the full forward
B, T, D, H, C, CQ, DN, DR, DV = 2, 5, 16, 2, 5, 6, 4, 4, 3
ROPES = {
    "interleaved": npattn.RoPE(interleaved=True),
    "halves": npattn.RoPE(theta=500.0),
    "partial": npattn.RoPE(fraction=0.5, interleaved=True),  # rotates 2 of the 4 rope dims
    None: None,
}


def config(q_lora=CQ, rope="interleaved", bias=True, **kw):
    return npattn.LatentConfig(
        D, H, q_lora, C, DN, DR, DV, qkv_bias=bias, out_bias=bias, rope=ROPES[rope], **kw
    )


def make(cfg, seed=0):
    """A float64 npattn.LatentAttention with random (not all-ones) norm scales."""
    m = npattn.LatentAttention(cfg, rng=seed).astype(np.float64)
    g = np.random.default_rng(seed + 10)
    sd = m.state_dict()
    for key in sd:
        if key.endswith("norm.scale"):
            sd[key] = 1.0 + 0.5 * g.standard_normal(sd[key].shape)
    m.load_state_dict(sd)
    return m


def mirror(m):
    tm = tp.LatentAttention(m.config, dtype=torch.float64)
    tm.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in m.state_dict().items()})
    return tm


def inputs(seed=1, T=T):
    g = np.random.default_rng(seed)
    x = g.standard_normal((B, T, D))
    positions = np.stack([np.arange(3, 3 + T), np.arange(7, 7 + T)])  # (B, T), after 0
    kpm = np.ones((B, T), dtype=bool)
    kpm[0, :2] = False  # left padding of the first sequence
    return x, positions, kpm


def assert_close(actual, expected, tol=F64, what=""):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), **tol, err_msg=what)


# --- the configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(hidden_size=0), ValueError, "hidden_size"),
        (dict(num_heads=2.0), TypeError, "num_heads"),
        (dict(q_lora_rank=0), ValueError, "q_lora_rank"),
        (dict(kv_lora_rank=-1), ValueError, "kv_lora_rank"),
        (dict(qk_rope_head_dim=0), ValueError, "qk_rope_head_dim"),
        (dict(qkv_bias="yes"), TypeError, "qkv_bias"),
        (dict(norm_eps=-1.0), ValueError, "norm_eps"),
        (dict(scale=0.0), ValueError, "scale"),
        (dict(dropout=1.5), ValueError, "dropout"),
        (dict(rope="rope"), TypeError, "rope"),
        (dict(qk_rope_head_dim=3, rope=npattn.RoPE()), ValueError, "even"),
    ],
)
def test_config_errors_name_the_field(kwargs, error, match):
    fields = dict(
        hidden_size=D,
        num_heads=H,
        q_lora_rank=CQ,
        kv_lora_rank=C,
        qk_nope_head_dim=DN,
        qk_rope_head_dim=DR,
        v_head_dim=DV,
    )
    with pytest.raises(error, match=match):
        npattn.LatentConfig(**{**fields, **kwargs})


def test_config_is_the_source_of_truth():
    cfg = config(q_lora=None, scale=0.3)
    assert cfg.qk_head_dim == DN + DR and cfg.softmax_scale == 0.3
    assert config().softmax_scale == (DN + DR) ** -0.5
    m = make(cfg)
    assert list(m.state_dict()) == [
        "W_query.weight",  # no bias, as transformers' q_proj
        "W_kv_down.weight",
        "W_kv_down.bias",
        "kv_norm.scale",
        "W_kv_up.weight",
        "out_proj.weight",
        "out_proj.bias",
    ]
    assert list(make(config(bias=False)).state_dict()) == [
        "W_q_down.weight",
        "q_norm.scale",
        "W_q_up.weight",
        "W_kv_down.weight",
        "kv_norm.scale",
        "W_kv_up.weight",
        "out_proj.weight",
    ]
    rebuilt = npattn.LatentAttention(m.config).astype(np.float64)
    rebuilt.load_state_dict(m.state_dict())
    x = inputs()[0]
    assert_close(rebuilt(x), m(x))
    assert list(mirror(m).state_dict()) == list(m.state_dict())


def test_bad_call_arguments_are_named():
    m = make(config())
    x, positions, _ = inputs()
    with pytest.raises(ValueError, match="positions"):
        m(x, positions=positions[:, :3])
    with pytest.raises(TypeError, match="positions"):
        m(x, positions=positions.astype(float))
    with pytest.raises(ValueError, match="key_padding_mask"):
        m(x, key_padding_mask=np.ones((B, T + 1), dtype=bool))
    m(x[:, :2], use_cache=True)
    with pytest.raises(ValueError, match=r"key_padding_mask.*S=5"):  # cached 2 + new 3
        m(x[:, :3], use_cache=True, key_padding_mask=np.ones((B, 3), dtype=bool))


# --- against the torch mirror (autograd) --------------------------------------------------


@pytest.mark.parametrize("rope", ["interleaved", "halves", "partial", None])
@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("q_lora", [None, CQ])
def test_matches_torch_mirror_forward_and_backward(q_lora, padding, rope):
    m = make(config(q_lora=q_lora, rope=rope, bias=q_lora is None))
    tm = mirror(m)
    x, positions, kpm = inputs()
    kpm = kpm if padding else None
    out = m(x, positions=positions, key_padding_mask=kpm)
    G = np.random.default_rng(2).standard_normal(out.shape)  # a random upstream gradient
    dx = m.backward(G)
    xt = torch.tensor(x, requires_grad=True)
    out_t = tm(
        xt,
        positions=torch.from_numpy(positions),
        key_padding_mask=None if kpm is None else torch.from_numpy(kpm),
    )
    (out_t * torch.from_numpy(G)).sum().backward()
    assert_close(out, out_t.detach(), what="out")
    assert_close(dx, xt.grad, what="dx")
    grads = dict(tm.named_parameters())
    assert set(m.grads) == set(grads)
    for name, g in m.grads.items():
        assert_close(g, grads[name].grad, what=name)


def test_shared_rope_key_gradient_sums_over_heads():
    """W_kv_down's rope rows get one gradient from all H heads: with H doubled and every head
    a copy, that gradient doubles while the latent's rows keep theirs per head."""
    cfg1 = npattn.LatentConfig(D, 1, None, C, DN, DR, DV, rope=ROPES["interleaved"])
    cfg2 = npattn.LatentConfig(D, 2, None, C, DN, DR, DV, rope=ROPES["interleaved"])
    m1, m2 = make(cfg1), make(cfg2)
    sd = m1.state_dict()
    Wq = sd["W_query.weight"]
    Wkv = sd["W_kv_up.weight"]
    two = {
        "W_query.weight": np.concatenate([Wq, Wq]),
        "W_kv_down.weight": sd["W_kv_down.weight"],
        "kv_norm.scale": sd["kv_norm.scale"],
        "W_kv_up.weight": np.concatenate([Wkv, Wkv]),
        "out_proj.weight": np.concatenate([sd["out_proj.weight"]] * 2, axis=1) / 2,
    }
    m2.load_state_dict(two)
    x, positions, _ = inputs()
    assert_close(m2(x, positions=positions), m1(x, positions=positions))
    G = np.random.default_rng(3).standard_normal((B, T, D))
    m1(x, positions=positions)
    m1.backward(G)
    m2(x, positions=positions)
    m2.backward(G)
    rope_rows = slice(C, C + DR)
    g1, g2 = m1.grads["W_kv_down.weight"], m2.grads["W_kv_down.weight"]
    assert_close(g2[rope_rows], g1[rope_rows])  # two heads, each half the output weight
    assert np.abs(g1[rope_rows]).max() > 1e-3  # the rope key does get a gradient


# --- central differences -----------------------------------------------------------------


@pytest.mark.parametrize("q_lora", [None, 3])
def test_gradcheck_tiny(q_lora):
    cfg = npattn.LatentConfig(
        6, 2, q_lora, 3, 2, 2, 2, qkv_bias=True, out_bias=True, rope=ROPES["interleaved"]
    )
    cfg_dropout = npattn.LatentConfig(6, 2, q_lora, 3, 2, 2, 2, rope=ROPES["halves"], dropout=0.3)
    x = np.random.default_rng(4).standard_normal((2, 3, 6))
    for c in (cfg, cfg_dropout):
        report = check_module(npattn.LatentAttention(c, rng=5), x, **FD)
        assert report.passed, str(report)
        assert not any(r.zero_gradient for r in report), str(report)


# --- cached decoding: the absorbed form ---------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_absorbed_decoding_equals_full_forward(chunk):
    T7 = 7
    m = make(config()).eval()
    x, _, _ = inputs(T=T7)
    positions = np.stack([np.arange(2, 2 + T7), np.arange(9, 9 + T7)])  # (B, T), after 0
    kpm = np.ones((B, T7), dtype=bool)
    kpm[0, :3] = False
    full = m(x, positions=positions, key_padding_mask=kpm)
    tm = mirror(m).eval()
    full_t = tm(torch.from_numpy(x), positions=positions, key_padding_mask=torch.from_numpy(kpm))
    assert_close(full_t.detach(), full, what="mirror, full forward")
    for absorbed in (True, False):
        tm.absorbed = absorbed
        tm.reset_cache()
        m.reset_cache()
        outs, outs_t = [], []
        for i in range(0, T7, chunk):
            j = min(i + chunk, T7)
            kw = dict(positions=positions[:, i:j], key_padding_mask=kpm[:, :j])
            outs.append(m(x[:, i:j], use_cache=True, **kw))
            kw["key_padding_mask"] = torch.from_numpy(kpm[:, :j])
            outs_t.append(tm(torch.from_numpy(x[:, i:j]), use_cache=True, **kw).detach())
        assert_close(np.concatenate(outs, axis=1), full, CHUNKED_F64, "npattn, cached")
        assert_close(torch.cat(outs_t, dim=1), full, CHUNKED_F64, f"mirror, absorbed={absorbed}")
    assert m.ptr_current_pos == T7
    # the cache holds only the normalised latent and the rotated rope key
    assert m.cache_nbytes == B * T7 * (C + DR) * 8 == tm.cache_nbytes
    kv = x @ m.W_kv_down.weight.T + m.W_kv_down.bias  # (B, T, C + Dr)
    latent = kv[..., :C] / np.sqrt(np.mean(kv[..., :C] ** 2, axis=-1, keepdims=True) + 1e-6)
    assert_close(m.cache_latent, latent * m.kv_norm.scale, CHUNKED_F64, "cache_latent")
    assert_close(m.cache_k_rope, tm.cache_k_rope.detach(), CHUNKED_F64, "cache_k_rope")
    assert m.cache_latent.shape == (B, T7, C) and m.cache_k_rope.shape == (B, T7, DR)
    assert not np.allclose(m.cache_k_rope, kv[..., C:])  # rotated: not the raw rope key
    with pytest.raises(RuntimeError, match="inference only"):
        m.backward(np.ones((B, chunk if T7 % chunk == 0 else T7 % chunk, D)))
    m(x)  # a full forward empties the cache
    assert m.cache_nbytes == 0 and m.cache_latent is None


def test_default_positions_continue_after_the_cache():
    m = make(config()).eval()
    x = inputs(T=4)[0]
    full = m(x)  # positions 0 .. 3
    m.reset_cache()
    first = m(x[:, :3], use_cache=True)
    last = m(x[:, 3:], use_cache=True)
    assert_close(np.concatenate([first, last], axis=1), full, CHUNKED_F64)


# --- against transformers' DeepseekV3Attention --------------------------------------------

HF_NAMES = {  # npattn key -> transformers' parameter name
    "W_query.weight": "q_proj.weight",
    "W_q_down.weight": "q_a_proj.weight",
    "W_q_down.bias": "q_a_proj.bias",
    "q_norm.scale": "q_a_layernorm.weight",
    "W_q_up.weight": "q_b_proj.weight",
    "W_kv_down.weight": "kv_a_proj_with_mqa.weight",
    "W_kv_down.bias": "kv_a_proj_with_mqa.bias",
    "kv_norm.scale": "kv_a_layernorm.weight",
    "W_kv_up.weight": "kv_b_proj.weight",
    "out_proj.weight": "o_proj.weight",
    "out_proj.bias": "o_proj.bias",
}


@contextlib.contextmanager
def float64_islands(modeling):
    """transformers computes RMSNorm and eager softmax in float32 even for a float64 model:
    both made float64 here, so a float64 port can be compared to ~1e-14."""

    def rmsnorm_forward(self, hidden_states):
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))

    def eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
        if attention_mask is not None:
            attn_weights = attn_weights + attention_mask
        attn_weights = torch.softmax(attn_weights, dim=-1)  # in the input's dtype
        attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
        return attn_output, attn_weights

    saved = modeling.DeepseekV3RMSNorm.forward, modeling.eager_attention_forward
    modeling.DeepseekV3RMSNorm.forward = rmsnorm_forward
    modeling.eager_attention_forward = eager
    try:
        yield
    finally:
        modeling.DeepseekV3RMSNorm.forward, modeling.eager_attention_forward = saved


def hf_layer(q_lora, interleave, bias, impl, rope_parameters=None):
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.DeepseekV3Config(
        hidden_size=D,
        num_attention_heads=H,
        num_key_value_heads=H,
        q_lora_rank=q_lora,
        kv_lora_rank=C,
        qk_nope_head_dim=DN,
        qk_rope_head_dim=DR,
        v_head_dim=DV,
        attention_bias=bias,
        rope_interleave=interleave,
        num_hidden_layers=1,
        max_position_embeddings=64,
        rope_parameters=rope_parameters or {"rope_type": "default", "rope_theta": 10_000.0},
    )
    hf_config._attn_implementation = impl
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as modeling

    torch.manual_seed(0)
    layer = modeling.DeepseekV3Attention(hf_config, layer_idx=0).double().eval()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "layernorm" in name:
                p.copy_(1.0 + 0.5 * torch.randn_like(p))
    return layer, hf_config, modeling


def npattn_from_hf(layer, cfg):
    m = npattn.LatentAttention(cfg).astype(np.float64)
    hf = dict(layer.named_parameters())
    m.load_state_dict({k: hf[HF_NAMES[k]].detach().numpy() for k in m.state_dict()})
    return m


@pytest.mark.parametrize(
    "q_lora, interleave, bias, impl",
    [(CQ, True, False, "eager"), (None, False, True, "eager"), (CQ, True, True, "sdpa")],
)
def test_matches_transformers_deepseek_v3(q_lora, interleave, bias, impl):
    layer, _, modeling = hf_layer(q_lora, interleave, bias, impl)
    rope = npattn.RoPE(theta=10_000.0, interleaved=interleave)
    cfg = npattn.LatentConfig(D, H, q_lora, C, DN, DR, DV, qkv_bias=bias, out_bias=bias, rope=rope)
    m = npattn_from_hf(layer, cfg)
    x, _, kpm = inputs()
    position_ids = np.cumsum(kpm, axis=1) - 1  # left padding, as transformers numbers it
    position_ids[position_ids < 0] = 0
    cos, sin = rope.tables(DR, position_ids)  # (B, T, Dr), float64 (HF's are float32)
    keep = np.tril(np.ones((T, T), dtype=bool)) & kpm[:, None, None, :]  # (B, 1, T, S)
    additive = np.where(keep, 0.0, torch.finfo(torch.float64).min)
    xt = torch.tensor(x, requires_grad=True)
    with float64_islands(modeling):
        out_hf, _ = layer(
            xt,
            position_embeddings=(torch.from_numpy(cos), torch.from_numpy(sin)),
            attention_mask=torch.from_numpy(additive),
        )
    G = np.random.default_rng(6).standard_normal(out_hf.shape)
    real = kpm[..., None]  # padded query rows differ in HF (no real key): compared on real rows
    (out_hf * torch.from_numpy(G * real)).sum().backward()
    out = m(x, positions=position_ids, key_padding_mask=kpm)
    assert_close(out * real, out_hf.detach().numpy() * real, what="out")
    dx = m.backward(G * real)
    assert_close(dx, xt.grad, what="dx")
    hf = dict(layer.named_parameters())
    for name, g in m.grads.items():
        assert_close(g, hf[HF_NAMES[name]].grad, what=name)


def test_matches_transformers_yarn_mscale():
    """DeepSeek-V3's YaRN: cos and sin scaled by mscale / mscale_all_dim, and the softmax scale
    by yarn_get_mscale(factor, mscale_all_dim)**2 (folded into LatentConfig.scale)."""
    yarn = dict(factor=4.0, original_max_position_embeddings=8, mscale=1.0, mscale_all_dim=0.8)
    params = {"rope_type": "yarn", "rope_theta": 10_000.0, "beta_fast": 32.0, "beta_slow": 1.0}
    layer, hf_config, modeling = hf_layer(CQ, True, False, "eager", dict(params, **yarn))
    rope = npattn.RoPE(interleaved=True, scaling=npattn.YaRN(**yarn))
    mscale = yarn_get_mscale(yarn["factor"], yarn["mscale_all_dim"])
    cfg = npattn.LatentConfig(
        D, H, CQ, C, DN, DR, DV, rope=rope, scale=(DN + DR) ** -0.5 * mscale**2
    )
    assert cfg.softmax_scale == pytest.approx(layer.scaling, rel=1e-15)
    m = npattn_from_hf(layer, cfg)
    x = inputs(T=T)[0]
    position_ids = np.tile(np.arange(10, 10 + T), (B, 1))  # past the original 8 positions
    cos, sin = rope.tables(DR, position_ids)
    hf_cos, hf_sin = modeling.DeepseekV3RotaryEmbedding(hf_config)(
        torch.zeros(1), torch.from_numpy(position_ids)
    )
    np.testing.assert_allclose(hf_cos.numpy(), cos, atol=1e-5)  # HF's tables are float32
    np.testing.assert_allclose(hf_sin.numpy(), sin, atol=1e-5)
    mask = torch.from_numpy(np.where(np.tril(np.ones((T, T), bool)), 0.0, -np.inf))
    with float64_islands(modeling), torch.no_grad():
        out_hf, _ = layer(
            torch.from_numpy(x),
            position_embeddings=(torch.from_numpy(cos), torch.from_numpy(sin)),
            attention_mask=mask[None, None],
        )
    assert_close(m(x, positions=position_ids), out_hf.numpy())


def test_default_rotary_tables_match_transformers():
    layer, hf_config, modeling = hf_layer(CQ, True, False, "eager")
    position_ids = np.stack([np.arange(0, 20), np.arange(30, 50)])
    cos, sin = npattn.RoPE().tables(DR, position_ids)  # (B, T, Dr), float64
    hf_cos, hf_sin = modeling.DeepseekV3RotaryEmbedding(hf_config)(
        torch.zeros(1), torch.from_numpy(position_ids)
    )
    assert hf_cos.dtype == torch.float32  # angles in float32: agreement to float32's level
    np.testing.assert_allclose(hf_cos.numpy(), cos, atol=1e-5)
    np.testing.assert_allclose(hf_sin.numpy(), sin, atol=1e-5)
