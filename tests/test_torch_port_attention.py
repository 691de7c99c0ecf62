"""torch_port.Attention: the torch mirror of npattn.Attention built from an AttentionConfig.

Its agreement with transformers' layers is in tests/test_hf_families.py; here: the
state_dict, the cache (chunked decoding equals the full forward, a window bounds the cache),
positions, padding, the RoPE layouts, sinks, soft-capping, dropout, errors, and conversion
to npattn and back keeping the config.
"""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import npattn  # noqa: E402
import torch_port  # noqa: E402
from npattn.models.config import AttentionConfig, QKNorm  # noqa: E402
from npattn.ops.rope_config import RoPE, YaRN  # noqa: E402

FULL = AttentionConfig(
    hidden_size=24,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    qkv_bias=True,
    out_bias=True,
    qk_norm=QKNorm(width="head", eps=1e-6, offset=1.0),
    rope=RoPE(
        theta=10_000.0, fraction=0.5, scaling=YaRN(factor=4.0, original_max_position_embeddings=8)
    ),
    scale=0.3,
    window=3,
    softcap=2.0,
    sinks=True,
)


def build(config, seed=0):
    m = torch_port.Attention(config, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.3)
    return m.eval()


def x_of(B, T, d, seed=1):
    return torch.randn(B, T, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_state_dict_keys_and_order():
    m = torch_port.Attention(FULL)
    assert list(m.state_dict()) == [
        "sinks",
        "W_query.weight",
        "W_query.bias",
        "W_key.weight",
        "W_key.bias",
        "W_value.weight",
        "W_value.bias",
        "out_proj.weight",
        "out_proj.bias",
        "q_norm.scale",
        "k_norm.scale",
    ]
    assert m.q_norm.scale.shape == (8,) and m.sinks.shape == (4,)
    assert torch.equal(m.q_norm.scale, torch.zeros(8))  # offset 1: (1 + w) starts at 1
    olmo = torch_port.Attention(dataclasses.replace(FULL, qk_norm=QKNorm(width="all")))
    assert olmo.q_norm.scale.shape == (32,) and olmo.k_norm.scale.shape == (16,)
    assert m.config is FULL
    if hasattr(npattn, "Attention"):
        assert list(npattn.Attention(FULL).state_dict()) == list(m.state_dict())


@pytest.mark.parametrize("window", [None, 3])
def test_chunked_cached_decoding_equals_the_full_forward(window):
    m = build(dataclasses.replace(FULL, window=window))
    x = x_of(2, 9, 24)
    full = m(x)
    m.reset_cache()
    outs = [m(x[:, a:b], use_cache=True) for a, b in ((0, 4), (4, 5), (5, 7), (7, 8), (8, 9))]
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=1e-13, atol=1e-13)
    assert m.ptr_current_pos == 9
    if window is not None:  # the cache keeps the last `window` slots
        assert m.cache_k.shape[2] == window and m.cache_start == 9 - window
    else:
        assert m.cache_k.shape[2] == 9


def test_default_positions_are_the_cache_pointer():
    m = build(FULL)
    x = x_of(1, 6, 24)
    m(x[:, :4], use_cache=True)
    a = m(x[:, 4:], use_cache=True)
    m.reset_cache()
    m(x[:, :4], use_cache=True, positions=torch.arange(4))
    b = m(x[:, 4:], use_cache=True, positions=np.array([4, 5]))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_positions_move_rope_not_the_mask():
    """Shifting every position by the same amount leaves the scores of RoPE (relative) as
    they were: the output is unchanged; the mask follows the slots."""
    cfg = dataclasses.replace(FULL, rope=RoPE(theta=100.0), qk_norm=None)
    m = build(cfg)
    x = x_of(2, 5, 24)
    torch.testing.assert_close(m(x), m(x, positions=torch.arange(5) + 17), rtol=1e-12, atol=1e-12)
    per_row = torch.stack([torch.arange(5), torch.arange(5) + 4])  # (B, T)
    out = m(x, positions=per_row)
    torch.testing.assert_close(out, m(x), rtol=1e-12, atol=1e-12)


def test_interleaved_rope_is_split_halves_with_permuted_dims():
    """Interleaved pairs (2i, 2i+1) are split-halves pairs (i, i + R/2) after permuting each
    head's query and key dims: the same function once W_query and W_key's rows are permuted."""
    cfg = AttentionConfig(hidden_size=16, num_heads=2, num_kv_heads=1, rope=RoPE(theta=50.0))
    split = build(cfg)
    inter = torch_port.Attention(dataclasses.replace(cfg, rope=RoPE(theta=50.0, interleaved=True)))
    inter = inter.double().eval()
    E = cfg.head_size
    perm = torch.stack([torch.arange(E // 2), torch.arange(E // 2) + E // 2], dim=1).flatten()
    sd = split.state_dict()
    for name, heads in (("W_query", 2), ("W_key", 1)):
        w = sd[f"{name}.weight"].view(heads, E, -1)[:, perm].reshape(heads * E, -1)
        sd = {**sd, f"{name}.weight": w}
    inter.load_state_dict(sd)
    x = x_of(2, 6, 16)
    torch.testing.assert_close(inter(x), split(x), rtol=1e-12, atol=1e-12)


def test_partial_rotary_passes_the_last_dims_through():
    x = x_of(1, 3, 8)[None]  # (1, 1, 3, 8)
    cos, sin = (torch.from_numpy(t) for t in RoPE(fraction=0.5).tables(8, np.arange(3) + 2))
    out = torch_port.attention.rotate(x, cos, sin, False)
    torch.testing.assert_close(out[..., 4:], x[..., 4:], rtol=0, atol=0)
    assert not torch.allclose(out[..., :4], x[..., :4])


def test_padding_with_cache_covers_cached_and_new_tokens():
    m = build(dataclasses.replace(FULL, window=None))
    x = x_of(2, 6, 24)
    kpm = torch.ones(2, 6, dtype=torch.bool)
    kpm[1, :2] = False
    full = m(x, key_padding_mask=kpm)
    m.reset_cache()
    a = m(x[:, :4], use_cache=True, key_padding_mask=kpm[:, :4])
    b = m(x[:, 4:], use_cache=True, key_padding_mask=kpm)
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match=r"key_padding_mask must be .*\(2, 8\)"):
        m(x[:, :2], use_cache=True, key_padding_mask=kpm)


def test_fully_masked_rows_are_zero_and_gradients_finite():
    cfg = dataclasses.replace(FULL, sinks=False, out_bias=False)
    m = build(cfg)
    x = x_of(2, 4, 24).requires_grad_(True)
    kpm = torch.ones(2, 4, dtype=torch.bool)
    kpm[0, :2] = False  # row 0's first two queries see no key
    out = m(x, key_padding_mask=kpm)
    assert torch.equal(out[0, :2], torch.zeros(2, 24, dtype=torch.float64))
    out.backward(x_of(2, 4, 24, seed=5))
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_sinks_join_the_denominator():
    """A very negative sink is no sink; a sink takes its share of every row's weight."""
    cfg = dataclasses.replace(FULL, window=None, softcap=None)
    m = build(cfg)
    plain = torch_port.Attention(dataclasses.replace(cfg, sinks=False)).double().eval()
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if k != "sinks"})
    x = x_of(2, 5, 24)
    with torch.no_grad():
        m.sinks.fill_(-1e4)
    torch.testing.assert_close(m(x), plain(x), rtol=1e-13, atol=1e-13)
    with torch.no_grad():
        m.sinks.fill_(1e4)  # all weight on the sink: only out_proj's bias is left
    torch.testing.assert_close(m(x), m.out_proj.bias.expand(2, 5, 24), rtol=0, atol=1e-12)


def test_torch_autograd_gradcheck():
    m = build(dataclasses.replace(FULL, hidden_size=8, num_heads=2, num_kv_heads=1, head_dim=4))
    x = x_of(1, 4, 8).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: m(x, positions=torch.arange(4) + 3), (x,))


def test_dropout_only_in_training():
    m = build(dataclasses.replace(FULL, dropout=0.5))
    x = x_of(1, 5, 24)
    torch.testing.assert_close(m(x), m(x), rtol=0, atol=0)
    m.train()
    torch.manual_seed(0)
    assert not torch.allclose(m(x), m.eval()(x))


def test_errors_name_the_argument():
    m = build(FULL)
    with pytest.raises(TypeError, match="AttentionConfig"):
        torch_port.Attention({"hidden_size": 24})
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, hidden_size=24\)"):
        m(torch.zeros(1, 2, 5))
    with pytest.raises(ValueError, match="positions must be an integer array"):
        m(x_of(1, 3, 24), positions=torch.arange(4))
    with pytest.raises(ValueError, match="positions must be >= 0"):
        m(x_of(1, 3, 24), positions=torch.tensor([-1, 0, 1]))
    m(x_of(1, 3, 24), use_cache=True)
    with pytest.raises(ValueError, match="reset_cache"):
        m(x_of(2, 1, 24), use_cache=True)
    assert m.ptr_current_pos == 3  # an error leaves the cache as it was


@pytest.mark.skipif(not hasattr(npattn, "Attention"), reason="npattn.Attention not in this npattn")
def test_conversion_round_trip_keeps_the_config():
    m = build(FULL)
    ref = torch_port.to_npattn(m)
    assert type(ref) is npattn.Attention and ref.config == FULL
    back = torch_port.from_npattn(ref)
    assert type(back) is torch_port.Attention and back.config == FULL
    for k, v in m.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    x = x_of(2, 6, 24)
    out = ref.forward(x.numpy(), positions=np.arange(6) + 2)
    np.testing.assert_allclose(
        out, m(x, positions=torch.arange(6) + 2).detach().numpy(), rtol=1e-12, atol=1e-12
    )


CONFIGS = [
    FULL,
    dataclasses.replace(FULL, qk_norm=QKNorm(width="all"), window=None, softcap=None),
    dataclasses.replace(FULL, rope=RoPE(theta=100.0, interleaved=True), sinks=False),
    AttentionConfig(hidden_size=24, num_heads=3, num_kv_heads=1, causal=False, out_bias=True),
    AttentionConfig(hidden_size=24, num_heads=2, head_dim=8, rope=RoPE(fraction=0.5), window=2),
]


@pytest.mark.skipif(not hasattr(npattn, "Attention"), reason="npattn.Attention not in this npattn")
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.describe()[:60])
def test_matches_npattn_attention(config):
    """npattn.Attention's forward and hand-written backward against the mirror's autograd, with
    key padding that empties a row and per-sequence positions; then chunked decoding."""
    m = build(config, seed=3)
    ref = torch_port.to_npattn(m)
    x = x_of(2, 6, 24, seed=4)
    g = x_of(2, 6, 24, seed=5)
    kpm = torch.ones(2, 6, dtype=torch.bool)
    kpm[1, :3] = False
    positions = torch.stack([torch.arange(6) + 2, (torch.arange(6) - 3).clamp(min=0)])
    xt = x.clone().requires_grad_(True)
    out = m(xt, positions=positions, key_padding_mask=kpm)
    out.backward(g)
    out_np = ref.forward(x.numpy(), positions=positions.numpy(), key_padding_mask=kpm.numpy())
    np.testing.assert_allclose(out_np, out.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(ref.backward(g.numpy()), xt.grad.numpy(), rtol=1e-11, atol=1e-13)
    for name, p in m.named_parameters():
        np.testing.assert_allclose(ref.grads[name], p.grad.numpy(), rtol=1e-11, atol=1e-13)
    m.reset_cache()
    ref.reset_cache()
    if not config.causal:  # a bidirectional layer cannot decode: both sides refuse
        for layer in (ref, m):
            with pytest.raises(ValueError, match="needs a causal layer"):
                layer(x[:, :3].numpy() if layer is ref else x[:, :3], use_cache=True)
        return
    for a, b in ((0, 3), (3, 4), (4, 6)):
        got = ref.forward(x[:, a:b].numpy(), use_cache=True, key_padding_mask=kpm[:, :b].numpy())
        want = m(x[:, a:b], use_cache=True, key_padding_mask=kpm[:, :b])
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.skipif(not hasattr(npattn, "LatentAttention"), reason="no npattn.LatentAttention")
def test_latent_attention_converts_keeping_the_config():
    config = npattn.LatentConfig(
        hidden_size=16,
        num_heads=2,
        q_lora_rank=6,
        kv_lora_rank=4,
        qk_nope_head_dim=4,
        qk_rope_head_dim=4,
        v_head_dim=3,
        qkv_bias=True,
        rope=RoPE(interleaved=True, scaling=YaRN(factor=2.0, original_max_position_embeddings=4)),
        scale=0.4,
    )
    m = torch_port.LatentAttention(config, dtype=torch.float64).eval()
    ref = torch_port.to_npattn(m)
    assert type(ref) is npattn.LatentAttention and ref.config == config
    back = torch_port.from_npattn(ref)
    assert type(back) is torch_port.LatentAttention and back.config == config
    for k, v in m.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    x = x_of(2, 5, 16)
    np.testing.assert_allclose(
        ref.forward(x.numpy()), m(x).detach().numpy(), rtol=1e-12, atol=1e-13
    )
