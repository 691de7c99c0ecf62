"""torch_port.hf against Hugging Face transformers, family by family, in float64.

Each family's layer is built from a tiny config with seeded N(0, 0.1^2) weights (norms and
sinks included) and driven as its model drives it: the model's 4-D mask
(create_causal_mask / create_sliding_window_causal_mask), a DynamicCache for decoding, and
position embeddings. transformers' float32 steps (eager softmax, RMSNorm, RoPE angles) are
kept in float64 as tests/hf_helpers.py explains; the RoPE tables of the model's rotary module
are compared with npattn's separately, to float32's precision.

Compared: output, dL/dx and every parameter gradient (pulled back through weight_map to
transformers' names) for L = sum(out * g) with a random g, at positions starting after 0;
cached decoding (prefill, then one token at a time); a left-padded batch (real rows only).
"""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import hf_helpers as H  # noqa: E402

import torch_port.hf as tph  # noqa: E402

CASES = [(f, i) for f in H.FAMILIES for i in H.LAYERS.get(f, (0,))]
IDS = [f"{f}-layer{i}" for f, i in CASES]
TOL = 1e-12  # float64 with transformers' float32 steps controlled
IMPLS = ["torch", "npattn"]


def needs(case, impl):
    if impl == "npattn" and not H.has_npattn(case):
        pytest.skip(f"this npattn has no class for {case.family}")


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def case(request):
    family, layer_idx = request.param
    return H.make_case(family, layer_idx)


def test_supported_families_sorted_and_complete():
    assert list(tph.SUPPORTED_FAMILIES) == sorted(tph.SUPPORTED_FAMILIES)
    assert set(H.FAMILIES) <= set(tph.SUPPORTED_FAMILIES)


def test_unsupported_layer_lists_the_families():
    with pytest.raises(tph.UnsupportedLayerError) as e:
        tph.config_of(torch.nn.Linear(2, 2))
    assert "Linear" in str(e.value)
    assert ", ".join(tph.SUPPORTED_FAMILIES) in str(e.value)


def test_config_reads_the_layer_settings(case):
    """The settings config_of derives from the model's config equal those the layer itself
    computed in its constructor (scale, window, soft-capping, head sizes)."""
    cfg = tph.config_of(case.layer)
    layer = case.layer
    assert cfg.softmax_scale == pytest.approx(layer.scaling, rel=1e-15)
    if case.family == "deepseek_v3":
        assert cfg.qk_head_dim == layer.qk_head_dim and cfg.v_head_dim == layer.v_head_dim
        assert cfg.q_lora_rank == layer.q_lora_rank and cfg.kv_lora_rank == layer.kv_lora_rank
        assert cfg.rope.interleaved == case.config.rope_interleave
        assert cfg.norm_eps == layer.kv_a_layernorm.variance_epsilon
        return
    E = layer.head_dim if hasattr(layer, "head_dim") else layer.head_size
    assert cfg.head_size == E
    window = getattr(layer, "sliding_window", None)
    if case.family in ("mistral", "mixtral", "phi3"):  # the window sits on the config
        window = case.config.sliding_window
    assert cfg.window == window
    assert cfg.window == (case.config.sliding_window if case.sliding else None)
    softcap = getattr(layer, "attn_logit_softcapping", None)
    assert cfg.softcap == (None if case.family == "gemma3" else softcap)  # Gemma 3 drops it
    assert cfg.sinks == hasattr(layer, "sinks")
    assert cfg.kv_heads == getattr(case.config, "num_key_value_heads", cfg.num_heads)


def test_weight_map_gives_npattn_keys_and_shapes(case):
    cfg = tph.config_of(case.layer)
    mapped = tph.weight_map(case.layer)(dict(case.layer.named_parameters()))
    m = tph.to_torch(case.layer)
    assert list(mapped) == list(m.state_dict())
    for k, v in m.state_dict().items():
        assert mapped[k].shape == v.shape, k
        assert torch.equal(mapped[k], v), k
    assert m.config == cfg
    if H.has_npattn(case):
        ref = tph.to_npattn(case.layer)
        assert ref.config == cfg and type(ref).__name__ == type(m).__name__
        assert list(ref.state_dict()) == list(mapped)
        for k, v in ref.state_dict().items():
            assert v.dtype == np.float64
            np.testing.assert_array_equal(v, mapped[k].detach().numpy(), err_msg=k)


@pytest.mark.parametrize("impl", IMPLS)
def test_output_and_gradients(case, impl):
    needs(case, impl)
    errs = H.grad_errors(case, impl)
    assert errs["out"] < TOL and errs["dx"] < TOL and errs["param grads"] < TOL, errs


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("start", [0, 4])
def test_cached_decoding(case, impl, start):
    needs(case, impl)
    assert H.decode_error(case, impl, start=start) < TOL


@pytest.mark.parametrize("impl", IMPLS)
def test_left_padded_decoding(case, impl):
    needs(case, impl)
    assert H.decode_error(case, impl, pads=(0, 3)) < TOL


def test_rotary_tables_equal_npattn_to_float32(case):
    """transformers' rotary module (inv_freq and angles in float32) against npattn's float64
    tables: equal to float32's precision, at positions past max_position_embeddings too
    (Qwen2's dynamic NTK rescales there)."""
    rope = tph.config_of(case.layer).rope
    if rope is None:
        pytest.skip("GPT-2 has no RoPE")
    T = 12
    position_ids = torch.arange(T)[None]
    x = torch.zeros(1, T, H.D_MODEL, dtype=torch.float64)
    cos, sin = H.hf_rotary_tables(case, x, position_ids)
    ref_cos, ref_sin = H.hf_position_embeddings(case, rope, position_ids)
    # angles up to ~12 rad carry float32's absolute error ~ 12 * 2^-24 ~ 1e-6
    assert (cos - ref_cos).abs().max() < 5e-6
    assert (sin - ref_sin).abs().max() < 5e-6


def test_float32_steps_are_what_the_controls_remove():
    """Without the float64 controls, transformers' float32 softmax leaves ~1e-8 of error: the
    controls are what brings the agreement to ~1e-16, not a weaker comparison."""
    case = H.make_case("llama")
    cfg = tph.config_of(case.layer)
    x, _ = H.inputs(2, 7, 1)
    position_ids = torch.arange(7)[None].expand(2, 7)
    with torch.no_grad():
        raw = H.hf_forward(case, x, position_ids, cfg.rope)
        with H.float64_transformers("llama"):
            controlled = H.hf_forward(case, x, position_ids, cfg.rope)
        ours = tph.to_torch(case.layer)(x, positions=position_ids)
    assert H.rel_err(ours, controlled) < TOL
    assert 1e-10 < H.rel_err(ours, raw) < 1e-5


def test_sdpa_attention_agrees_without_patching():
    """With attn_implementation="sdpa" transformers' softmax stays in float64 (no patch)."""
    case = H.make_case("llama", attn_implementation="sdpa")
    cfg = tph.config_of(case.layer)
    x, _ = H.inputs(2, 7, 1)
    position_ids = torch.arange(7)[None].expand(2, 7) + 5
    with torch.no_grad():
        ref = H.hf_forward(case, x, position_ids, cfg.rope)
        ours = tph.to_torch(case.layer)(x, positions=position_ids)
    assert H.rel_err(ours, ref) < TOL


@pytest.mark.parametrize(
    "family, layer_idx, change",
    [
        ("gemma2", 0, {"softcap": None}),
        ("gemma2", 1, {"window": 4}),
        ("mistral", 0, {"window": None}),
        ("gpt2", 1, {"scale": None}),
        ("gemma3", 0, {"scale": None}),
    ],
)
def test_a_wrong_setting_shows(family, layer_idx, change, monkeypatch):
    """The comparison sees each setting: changing one breaks the agreement."""
    real = tph.config_of

    def changed(layer):
        return dataclasses.replace(real(layer), **change)

    monkeypatch.setattr(tph, "config_of", changed)
    monkeypatch.setattr(sys.modules["torch_port.hf.weights"], "config_of", changed)
    case = H.make_case(family, layer_idx)
    assert H.grad_errors(case, "torch")["out"] > 1e-3


def test_gpt_neox_interleave_is_per_head():
    """GPT-NeoX's fused rows are [q_h; k_h; v_h] per head: reading them as [q; k; v]
    (Phi-3's layout) gives other projections."""
    case = H.make_case("gpt_neox")
    w = case.layer.query_key_value.weight  # (3d, d)
    mapped = tph.weight_map(case.layer)(dict(case.layer.named_parameters()))
    E = 16
    assert torch.equal(mapped["W_query.weight"][:E], w[:E])
    assert torch.equal(mapped["W_key.weight"][:E], w[E : 2 * E])
    assert not torch.equal(mapped["W_key.weight"], w[64:128])


def test_to_torch_keeps_the_layer_dtype():
    case = H.make_case("qwen3")
    case.layer.float()
    m = tph.to_torch(case.layer)
    assert all(p.dtype == torch.float32 for p in m.parameters())


def test_transformers_is_imported_only_by_torch_port_hf():
    code = (
        "import sys, npattn, torch_port\n"
        "torch_port.Attention, torch_port.to_npattn\n"
        "assert 'transformers' not in sys.modules, 'transformers imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_npattn_tables_feed_the_layer_in_float64():
    """The position embeddings handed to the layer are float64 (no float32 angles)."""
    case = H.make_case("mistral")  # default RoPE: the first pair turns by 1 rad per position
    rope = tph.config_of(case.layer).rope
    cos, sin = H.hf_position_embeddings(case, rope, torch.arange(5)[None])
    assert cos.dtype == sin.dtype == torch.float64
    np.testing.assert_allclose(cos[0, :, 0].numpy(), np.cos(np.arange(5)), rtol=1e-15)
    np.testing.assert_allclose(sin[0, :, 0].numpy(), np.sin(np.arange(5)), rtol=1e-15)


@pytest.mark.parametrize(
    "family, overrides, match",
    [
        (
            "phi3",
            {
                "rope_parameters": {
                    "rope_type": "longrope",
                    "rope_theta": 10_000.0,
                    "short_factor": [1.0] * 8,
                    "long_factor": [2.0] * 8,
                    "factor": 4.0,
                    "original_max_position_embeddings": 16,
                },
                "max_position_embeddings": 64,
            },
            "longrope",
        ),
        ("gemma3", {"use_bidirectional_attention": True}, "bidirectional"),
        ("gpt2", {"add_cross_attention": True}, "cross-attention"),
    ],
)
def test_unsupported_settings_are_named(family, overrides, match):
    case = H.make_case(family, H.LAYERS.get(family, (0,))[0], **overrides)
    with pytest.raises(tph.UnsupportedLayerError, match=match):
        tph.config_of(case.layer)


@pytest.mark.parametrize("scale_weights", [True, False])
@pytest.mark.parametrize("inverse_idx", [True, False])
@pytest.mark.parametrize("layer_idx", [0, 1])
def test_gpt2_scale_variants(scale_weights, inverse_idx, layer_idx):
    """GPT-2's scale: 1/sqrt(E) or 1 (scale_attn_weights), over layer_idx + 1
    (scale_attn_by_inverse_layer_idx), as the layer computes it; and the outputs agree."""
    case = H.make_case(
        "gpt2",
        layer_idx,
        scale_attn_weights=scale_weights,
        scale_attn_by_inverse_layer_idx=inverse_idx,
    )
    cfg = tph.config_of(case.layer)
    assert cfg.softmax_scale == case.layer.scaling
    assert H.grad_errors(case, "torch")["out"] < TOL
