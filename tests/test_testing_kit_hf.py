"""assert_hf_attention_matches on transformers' own layers: every supported family passes in
one line at float32, driven as its model drives it (its rotary module, transformers' mask
functions, positions, left padding, a DynamicCache), and planted bugs are caught: a scale 2%
off, keys rotated one position late, a window one wider. Shapes: x (B, T, 64)."""

import types

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import hf_helpers as H  # noqa: E402

from torch_port import testing as tt  # noqa: E402

CASES = [
    (f, i) for f in H.FAMILIES for i in H.LAYERS.get(f, (0,)) if H.has_npattn(H.make_case(f, i))
]
FEW = dict(max_examples=6)


def case_of(family, layer_idx=None):
    return H.make_case(family, H.LAYERS.get(family, (0,))[0] if layer_idx is None else layer_idx)


@pytest.mark.parametrize("family, layer_idx", CASES, ids=[f"{f}-layer{i}" for f, i in CASES])
def test_each_family_passes_in_one_line(family, layer_idx):
    layer = H.make_case(family, layer_idx).layer
    report = tt.assert_hf_attention_matches(layer, **FEW)
    assert {"output", "dx"} <= set(report.worst)
    assert any(q.startswith("step") for q in report.worst)  # it decoded too
    assert any(q.startswith("grad[") for q in report.worst)


@pytest.mark.parametrize("family", sorted({f for f, _ in CASES}))
def test_a_scale_two_percent_off_is_caught(family):
    layer = case_of(family).layer
    layer.scaling = layer.scaling * 1.02
    with pytest.raises(tt.ReferenceMismatchError, match="output disagrees"):
        tt.assert_hf_attention_matches(layer, decode=False, **FEW)


ROTARY = sorted({f for f, _ in CASES} - {"gpt2"})  # every family with RoPE


@pytest.mark.parametrize("family", ROTARY)
def test_keys_rotated_one_position_late_are_caught(family, monkeypatch):
    modeling = H.modeling(family)

    def late(rotate):
        def late_keys(q, k, cos, sin, *args, **kwargs):  # cos, sin (B, T, R)
            q_out, _ = rotate(q, k, cos, sin, *args, **kwargs)
            cos_late = torch.cat([cos[:, :1], cos[:, :-1]], dim=1)  # key t at position t - 1
            sin_late = torch.cat([sin[:, :1], sin[:, :-1]], dim=1)
            _, k_out = rotate(q, k, cos_late, sin_late, *args, **kwargs)
            return q_out, k_out

        return late_keys

    for name in ("apply_rotary_pos_emb", "apply_rotary_pos_emb_interleave"):  # DeepSeek's too
        if hasattr(modeling, name):
            monkeypatch.setattr(modeling, name, late(getattr(modeling, name)))
    with pytest.raises(tt.ReferenceMismatchError, match="output disagrees") as info:
        tt.assert_hf_attention_matches(case_of(family).layer, decode=False, **FEW)
    assert info.value.mismatch.example.tokens >= 2


WINDOWED = [(f, i) for f, i in CASES if H.make_case(f, i).sliding]


@pytest.mark.parametrize("family, layer_idx", WINDOWED, ids=[f"{f}-layer{i}" for f, i in WINDOWED])
def test_a_window_one_wider_is_caught(family, layer_idx):
    case = H.make_case(family, layer_idx)
    W = case.config.sliding_window

    def wider(self, hidden_states, *args, attention_mask=None, **kwargs):
        if attention_mask is not None:  # (B, 1, T, S): also attend to the key W back
            T, S = attention_mask.shape[-2:]
            i = torch.arange(T)[:, None] + (S - T)
            edge = (i - torch.arange(S)[None, :]) == W
            fill = True if attention_mask.dtype == torch.bool else 0.0
            attention_mask = attention_mask.masked_fill(edge, fill)
        kwargs["attention_mask"] = attention_mask
        return type(self).forward(self, hidden_states, *args, **kwargs)

    case.layer.forward = types.MethodType(wider, case.layer)
    with pytest.raises(tt.ReferenceMismatchError, match="output disagrees") as info:
        tt.assert_hf_attention_matches(case.layer, decode=False, **FEW)
    assert info.value.mismatch.example.tokens == W + 1  # the first T the window cuts


def test_the_replay_line_replays():
    layer = case_of("llama").layer
    layer.scaling = layer.scaling * 1.02
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_hf_attention_matches(layer, decode=False, **FEW)
    line = str(info.value).split("replay: ", 1)[1]
    scope = {"layer": layer}
    exec(
        line.replace("torch_port.testing.compare_hf(", "found = torch_port.testing.compare_hf("),
        scope,
    )
    assert scope["found"] == info.value.mismatch


def test_a_layer_the_kit_cannot_drive_is_a_setup_error():
    with pytest.raises(tt.KitSetupError, match="transformers attention layer"):
        tt.assert_hf_attention_matches(torch.nn.Linear(4, 4))
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertSelfAttention

    gemma2 = H.make_case("gemma2", attn_implementation="sdpa").layer  # sdpa refuses softcap
    with pytest.raises(tt.KitSetupError, match="_attn_implementation = 'eager'"):
        tt.assert_hf_attention_matches(gemma2)
    bert = BertSelfAttention(BertConfig(hidden_size=16, num_attention_heads=2))
    with pytest.raises(
        tt.KitSetupError, match="supported families are .*llama.*assert_matches_reference"
    ):
        tt.assert_hf_attention_matches(bert)


def test_in_float64_an_unmodified_layer_is_named_at_float32_rounding():
    """transformers computes softmax, RMSNorm and the RoPE angles in float32 whatever the
    dtype: the float64 check fails, and says where such float32 islands are."""
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_hf_attention_matches(case_of("qwen3").layer, dtype=torch.float64, **FEW)
    message = str(info.value)
    assert "at float32 rounding level" in message
    assert "softmax" in message and "RMSNorm" in message and "RoPE" in message


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_lower_precisions_pass_against_plain_torch(dtype):
    tt.assert_hf_attention_matches(case_of("llama").layer, dtype=dtype, **FEW)
