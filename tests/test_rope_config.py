"""npattn.RoPE (npattn.ops.rope_config): the inverse frequencies and attention factor of every
scaling against transformers' own ROPE_INIT_FUNCTIONS, the tables against its rotary
embedding modules, partial rotary against GPT-NeoX's apply_rotary_pos_emb through autograd,
invariants, and the errors. Shapes: E head dim, R rotary dims, tables (..., T, R)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds
from tolerances import F64

import npattn
from npattn import functional as F

SCALINGS = [
    None,
    npattn.LinearScaling(4.0),
    npattn.DynamicNTK(4.0, 32),
    npattn.Llama3(8.0, 1.0, 4.0, 32),
    npattn.YaRN(4.0, 16),
]


# ---------------------------------------------------------------- against transformers

# transformers computes inv_freq, the angles and cos / sin in float32; npattn in float64. A
# float32 inv_freq carries a relative error of a few ulps (2^-24 ~ 6e-8 each): 1e-6 relative
# leaves margin while any mistake in a formula gives errors of order 1e-2 or more.
HF_INV_FREQ = dict(rtol=1e-6, atol=0)
# A float32 angle of size <= 128 (the positions below) is rounded to 2^-17 ~ 8e-6 and
# position * inv_freq adds its own ulps: cos and sin agree to ~1e-5 absolute, not better.
HF_TABLES = dict(rtol=0, atol=3e-5)

E = 16  # head dim of the tiny transformers configs: hidden_size 64, 4 heads
MAX_POSITIONS = 32  # their max_position_embeddings

HF_CASES = {  # name: (transformers' rope_parameters, the same RoPE in npattn)
    "default": ({"rope_type": "default", "rope_theta": 10_000.0}, npattn.RoPE()),
    "linear": (
        {"rope_type": "linear", "rope_theta": 10_000.0, "factor": 4.0},
        npattn.RoPE(scaling=npattn.LinearScaling(4.0)),
    ),
    "dynamic": (  # transformers' "original" length is max_position_embeddings
        {"rope_type": "dynamic", "rope_theta": 10_000.0, "factor": 4.0},
        npattn.RoPE(scaling=npattn.DynamicNTK(4.0, MAX_POSITIONS)),
    ),
    "llama3": (
        {
            "rope_type": "llama3",
            "rope_theta": 500_000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8,
        },
        npattn.RoPE(500_000.0, scaling=npattn.Llama3(8.0, 1.0, 4.0, 8)),
    ),
    "yarn": (
        {"rope_type": "yarn", "rope_theta": 10_000.0, "factor": 4.0,
         "original_max_position_embeddings": 8},
        npattn.RoPE(scaling=npattn.YaRN(4.0, 8)),
    ),
    "yarn, mscale / mscale_all_dim, no truncation, partial 0.5": (
        {"rope_type": "yarn", "rope_theta": 10_000.0, "factor": 40.0,
         "original_max_position_embeddings": 8, "mscale": 1.0, "mscale_all_dim": 0.707,
         "truncate": False, "beta_fast": 16.0, "beta_slow": 2.0, "partial_rotary_factor": 0.5},
        npattn.RoPE(fraction=0.5, scaling=npattn.YaRN(40.0, 8, 16.0, 2.0, 1.0, 0.707,
                                                      truncate=False)),
    ),
    "yarn, correction range inside the head (theta 100, original 2048)": (
        {"rope_type": "yarn", "rope_theta": 100.0, "factor": 8.0,
         "original_max_position_embeddings": 2048},
        npattn.RoPE(100.0, scaling=npattn.YaRN(8.0, 2048)),
    ),
    "yarn, the same without truncation": (
        {"rope_type": "yarn", "rope_theta": 100.0, "factor": 8.0,
         "original_max_position_embeddings": 2048, "truncate": False},
        npattn.RoPE(100.0, scaling=npattn.YaRN(8.0, 2048, truncate=False)),
    ),
    "yarn, attention_factor given, partial 0.75": (
        {"rope_type": "yarn", "rope_theta": 1_000.0, "factor": 2.0,
         "original_max_position_embeddings": 16, "attention_factor": 0.8,
         "partial_rotary_factor": 0.75},
        npattn.RoPE(1_000.0, fraction=0.75,
                    scaling=npattn.YaRN(2.0, 16, attention_factor=0.8)),
    ),
    "linear, partial 0.5": (
        {"rope_type": "linear", "rope_theta": 10_000.0, "factor": 2.0,
         "partial_rotary_factor": 0.5},
        npattn.RoPE(fraction=0.5, scaling=npattn.LinearScaling(2.0)),
    ),
}  # fmt: skip


def hf_config(rope_parameters):
    transformers = pytest.importorskip("transformers")
    return transformers.LlamaConfig(
        hidden_size=4 * E,
        num_attention_heads=4,
        max_position_embeddings=MAX_POSITIONS,
        rope_parameters=dict(rope_parameters),
    )


def hf_inv_freq(rope_parameters, seq_len=None):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = hf_config(rope_parameters)
    kind = rope_parameters["rope_type"]
    if kind == "default":
        return LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    return ROPE_INIT_FUNCTIONS[kind](config, None, seq_len=seq_len)


@pytest.mark.parametrize("name", HF_CASES)
def test_inv_freq_and_attention_factor_match_transformers(name):
    params, rope = HF_CASES[name]
    expected, expected_factor = hf_inv_freq(params)
    inv_freq, attention_factor = rope.inv_freq(E)
    assert inv_freq.dtype == np.float64 and inv_freq.shape == (rope.rotary_dim(E) // 2,)
    np.testing.assert_allclose(inv_freq, expected.double().numpy(), **HF_INV_FREQ)
    assert attention_factor == pytest.approx(expected_factor, rel=1e-12)


@pytest.mark.parametrize("seq_len", [5, MAX_POSITIONS, MAX_POSITIONS + 1, 100])
def test_dynamic_ntk_at_a_sequence_length_matches_transformers(seq_len):
    params, rope = HF_CASES["dynamic"]
    expected, _ = hf_inv_freq(params, seq_len=seq_len)
    np.testing.assert_allclose(
        rope.inv_freq(E, seq_len)[0], expected.double().numpy(), **HF_INV_FREQ
    )


@pytest.mark.parametrize("name", HF_CASES)
@pytest.mark.parametrize("last", [MAX_POSITIONS - 1, 100])  # dynamic: below and past L0
def test_tables_match_transformers_rotary_embedding(name, last):
    """LlamaRotaryEmbedding's forward: cos(angles) * attention_scaling, in float32."""
    import torch
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    params, rope = HF_CASES[name]
    positions = np.stack([np.arange(last - 9, last + 1), np.arange(10) * 3])  # (B, T)
    module = LlamaRotaryEmbedding(hf_config(params))  # fresh: dynamic keeps state
    cos_hf, sin_hf = module(torch.zeros(1), torch.from_numpy(positions))
    cos, sin = rope.tables(E, positions)
    assert cos.shape == (2, 10, rope.rotary_dim(E)) and cos.dtype == np.float64
    np.testing.assert_allclose(cos, cos_hf.double().numpy(), err_msg="cos", **HF_TABLES)
    np.testing.assert_allclose(sin, sin_hf.double().numpy(), err_msg="sin", **HF_TABLES)


@pytest.mark.parametrize("fraction", [0.25, 0.5, 1.0])
def test_partial_rotary_matches_gpt_neox_through_autograd(fraction):
    """GPT-NeoX's tables (partial_rotary_factor) and apply_rotary_pos_emb, forward and
    backward with a random upstream gradient, in float64."""
    transformers = pytest.importorskip("transformers")
    import torch
    from transformers.models.gpt_neox import modeling_gpt_neox as neox

    config = transformers.GPTNeoXConfig(
        hidden_size=4 * E,
        num_attention_heads=4,
        max_position_embeddings=MAX_POSITIONS,
        rope_parameters={"rope_type": "default", "rope_theta": 100.0,
                         "partial_rotary_factor": fraction},
    )  # fmt: skip
    rope = npattn.RoPE(100.0, fraction=fraction)
    positions = np.array([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])  # (B, T)
    cos_hf, sin_hf = neox.GPTNeoXRotaryEmbedding(config)(torch.zeros(1), torch.tensor(positions))
    cos, sin = rope.tables(E, positions)  # (B, T, R)
    np.testing.assert_allclose(cos, cos_hf.double().numpy(), **HF_TABLES)
    np.testing.assert_allclose(sin, sin_hf.double().numpy(), **HF_TABLES)

    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((2, 2, 3, 5, E)), rng.standard_normal((2, 2, 3, 5, E))
    gq, gk = rng.standard_normal(q.shape), rng.standard_normal(k.shape)
    tq, tk = torch.tensor(q, requires_grad=True), torch.tensor(k, requires_grad=True)
    ref_q, ref_k = neox.apply_rotary_pos_emb(tq, tk, torch.tensor(cos), torch.tensor(sin))
    (ref_q * torch.tensor(gq) + ref_k * torch.tensor(gk)).sum().backward()
    for x, g, ref, tx in ((q, gq, ref_q, tq), (k, gk, ref_k, tk)):
        out, cache = F.rope_apply_forward(x, cos[:, None], sin[:, None])  # (B, 1, T, R)
        np.testing.assert_allclose(out, ref.detach().numpy(), err_msg="out", **F64)
        dx = F.rope_apply_backward(g, cache)
        np.testing.assert_allclose(dx, tx.grad.numpy(), err_msg="dx", **F64)


# ---------------------------------------------------------------- invariants

fractions = st.sampled_from([0.25, 0.5, 0.75, 1.0])
plain_scalings = st.sampled_from([s for s in SCALINGS if not isinstance(s, npattn.DynamicNTK)])


@given(fractions, plain_scalings, st.booleans(), seeds, st.integers(0, 40), st.integers(1, 9))
def test_scores_depend_only_on_the_position_difference(fraction, scaling, interleaved, seed,
                                                        i, shift):  # fmt: skip
    """q at i . k at j = q at i + s . k at j + s, for every scaling but the dynamic one."""
    rope = npattn.RoPE(fraction=fraction, interleaved=interleaved, scaling=scaling)
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((1, 8)), rng.standard_normal((1, 8))
    j = (i * 7 + seed) % 40

    def score(a, b):
        cos, sin = rope.tables(8, np.array([a, b]))  # (2, R)
        qa = F.rope_apply_forward(q, cos[:1], sin[:1], interleaved=interleaved)[0]
        kb = F.rope_apply_forward(k, cos[1:], sin[1:], interleaved=interleaved)[0]
        return float(np.sum(qa * kb))

    assert score(i, j) == pytest.approx(score(i + shift, j + shift), rel=1e-10, abs=1e-10)


@given(fractions, st.sampled_from(SCALINGS), st.booleans(), seeds)
def test_rotation_scales_norms_by_the_attention_factor_and_passes_the_rest(
    fraction, scaling, interleaved, seed
):
    rope = npattn.RoPE(fraction=fraction, interleaved=interleaved, scaling=scaling)
    R = rope.rotary_dim(16)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 5, 16))
    cos, sin = rope.tables(16, rng.integers(0, 64, (2, 5)))
    _, factor = rope.inv_freq(16, 64)
    np.testing.assert_allclose(cos**2 + sin**2, factor**2, rtol=1e-14)
    out = F.rope_apply_forward(x, cos, sin, interleaved=interleaved)[0]
    np.testing.assert_allclose(
        np.linalg.norm(out[..., :R], axis=-1), factor * np.linalg.norm(x[..., :R], axis=-1),
        rtol=1e-12,
    )  # fmt: skip
    np.testing.assert_array_equal(out[..., R:], x[..., R:])


def test_dynamic_ntk_is_plain_rope_until_the_original_length():
    dynamic = npattn.RoPE(scaling=npattn.DynamicNTK(4.0, 32))
    np.testing.assert_array_equal(
        dynamic.tables(E, np.arange(32))[0], npattn.RoPE().tables(E, np.arange(32))[0]
    )
    grown = dynamic.tables(E, np.arange(33))[0]
    assert not np.allclose(grown[:32], npattn.RoPE().tables(E, np.arange(32))[0])
    assert np.all(dynamic.inv_freq(E, 64)[0][1:] < npattn.RoPE().inv_freq(E)[0][1:])


def test_llama3_shares_compute_rope_params_maths():
    config = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                  original_context_length=64)  # fmt: skip
    rope = npattn.RoPE(500_000.0, scaling=npattn.Llama3(8.0, 1.0, 4.0, 64))
    for a, b in zip(rope.tables(32, np.arange(100)), F.compute_rope_params(32, 500_000.0, 100,
                                                                           config)):  # fmt: skip
        np.testing.assert_array_equal(a, b)


def test_yarn_keeps_fast_pairs_interpolates_slow_ones_and_ramps_between():
    """Head dim 128, theta 1e4, original 4096: YaRN's correction range is pairs 20 .. 46."""
    plain = npattn.RoPE().inv_freq(128)[0]
    inv_freq, factor = npattn.RoPE(scaling=npattn.YaRN(8.0, 4096)).inv_freq(128)
    ratio = plain / inv_freq  # 1: kept, 8: interpolated
    low = math.floor(128 * math.log(4096 / (32 * 2 * math.pi)) / (2 * math.log(1e4)))
    high = math.ceil(128 * math.log(4096 / (1 * 2 * math.pi)) / (2 * math.log(1e4)))
    assert (low, high) == (20, 46)
    np.testing.assert_allclose(ratio[: low + 1], 1.0, rtol=1e-14)
    np.testing.assert_allclose(ratio[high:], 8.0, rtol=1e-14)
    assert np.all(np.diff(ratio) >= 0) and np.all(((ratio > 1) & (ratio < 8))[low + 1 : high])
    assert factor == pytest.approx(0.1 * math.log(8.0) + 1)


def test_linear_divides_every_frequency():
    plain = npattn.RoPE(fraction=0.5).inv_freq(E)[0]
    np.testing.assert_array_equal(
        npattn.RoPE(fraction=0.5, scaling=npattn.LinearScaling(4.0)).inv_freq(E)[0], plain / 4.0
    )


def test_exported_and_frozen():
    assert F.RoPE is npattn.RoPE and F.YaRN is npattn.YaRN and F.Llama3 is npattn.Llama3
    assert F.DynamicNTK is npattn.DynamicNTK and F.LinearScaling is npattn.LinearScaling
    rope = npattn.RoPE()
    with pytest.raises(AttributeError):
        rope.theta = 1.0  # frozen
    assert npattn.RoPE(fraction=0.5) == npattn.RoPE(fraction=0.5)
    assert npattn.RoPE().tables(E, np.arange(0))[0].shape == (0, E)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: npattn.RoPE(interleaved=1), TypeError, "interleaved"),
        (lambda: npattn.RoPE(interleaved=np.bool_(True)), TypeError, "interleaved"),
        (lambda: npattn.RoPE(theta=0.0), ValueError, "theta"),
        (lambda: npattn.RoPE(theta=math.inf), ValueError, "theta"),
        (lambda: npattn.RoPE(theta="1e4"), TypeError, "theta"),
        (lambda: npattn.RoPE(fraction=0.0), ValueError, "fraction"),
        (lambda: npattn.RoPE(fraction=1.5), ValueError, "fraction"),
        (lambda: npattn.RoPE(fraction=math.nan), ValueError, "fraction"),
        (lambda: npattn.RoPE(scaling={"factor": 8.0}), TypeError, "scaling"),
        (lambda: npattn.RoPE(1.0, scaling=npattn.YaRN(4.0, 8)), ValueError, "theta"),
        (lambda: npattn.LinearScaling(0.5), ValueError, "factor"),
        (lambda: npattn.LinearScaling(True), TypeError, "factor"),
        (lambda: npattn.DynamicNTK(2.0, 0), ValueError, "original_max_position_embeddings"),
        (lambda: npattn.DynamicNTK(2.0, 8.0), TypeError, "original_max_position_embeddings"),
        (lambda: npattn.Llama3(8.0, 4.0, 1.0, 8), ValueError, "low_freq_factor"),
        (lambda: npattn.Llama3(8.0, 0.0, 1.0, 8), ValueError, "low_freq_factor"),
        (lambda: npattn.Llama3(math.nan, 1.0, 4.0, 8), ValueError, "factor"),
        (lambda: npattn.YaRN(4.0, 8, beta_fast=1.0, beta_slow=2.0), ValueError, "beta"),
        (lambda: npattn.YaRN(4.0, 8, beta_slow=0.0), ValueError, "beta_slow"),
        (lambda: npattn.YaRN(4.0, 8, attention_factor=0.0), ValueError, "attention_factor"),
        (lambda: npattn.YaRN(4.0, 8, mscale=math.inf), ValueError, "mscale"),
        (lambda: npattn.YaRN(4.0, 8, truncate=None), TypeError, "truncate"),
    ],
)
def test_config_errors_name_the_field(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_rotary_dim_and_tables_errors():
    with pytest.raises(ValueError, match="even"):
        npattn.RoPE(fraction=0.5).rotary_dim(6)  # R = 3
    with pytest.raises(ValueError, match="even"):
        npattn.RoPE(fraction=0.1).rotary_dim(8)  # R = 0
    with pytest.raises(TypeError, match="head_dim"):
        npattn.RoPE().rotary_dim(8.0)
    with pytest.raises(ValueError, match="R >= 4"):
        npattn.RoPE(fraction=0.25, scaling=npattn.DynamicNTK(2.0, 8)).inv_freq(8)
    with pytest.raises(TypeError, match="positions"):
        npattn.RoPE().tables(4, np.arange(3.0))
    with pytest.raises(ValueError, match="positions"):
        npattn.RoPE().tables(4, np.array([-1, 0]))
    with pytest.raises(ValueError, match="non-finite"):
        npattn.RoPE(theta=5e-324).tables(64, np.array([0, 10**6]))
    with pytest.raises(ValueError, match="seq_len"):
        npattn.RoPE().inv_freq(4, 0)
