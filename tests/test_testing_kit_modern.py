"""The kit with the modern npattn classes as references: grouped-query attention against a
Llama-style module, KV-cache decoding step by step (with the two classic cache bugs caught),
and RoPE through the forward adapter. Shapes: x (B, T, D) -> (B, T, D)."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
from user_modules import (  # noqa: E402
    CachedAttention,
    LlamaStyleAttention,
    NanoGPTAttention,
    rope_cos_sin,
)

import npattn  # noqa: E402
from torch_port import testing as tt  # noqa: E402
from torch_port.testing import maps  # noqa: E402

GQA = getattr(npattn, "GroupedQueryAttention", None)
pytestmark = pytest.mark.skipif(GQA is None, reason="needs npattn.GroupedQueryAttention")

D, CL = 8, 16
FEW = dict(max_examples=8)
DTYPES = [torch.float64, torch.float32]


def first(m, x):
    return m(x)[0]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_llama_style_module_matches_grouped_query_attention(dtype):
    torch.manual_seed(0)
    module, ref = LlamaStyleAttention(D, 4, 2), GQA(D, D, 0.0, 4, 2, rng=0)
    report = tt.assert_matches_reference(module, ref, maps.gqa(), forward=first, dtype=dtype, **FEW)
    assert "grad[k_proj.weight]" in report.worst
    bug = LlamaStyleAttention(D, 4, 2, bug="kv heads tiled, not interleaved")
    with pytest.raises(tt.ReferenceMismatchError, match="output disagrees"):
        tt.assert_matches_reference(bug, ref, maps.gqa(), forward=first, dtype=dtype)
    with pytest.raises(tt.ConfigurationMismatchError, match="num_key_value_heads=2"):
        tt.assert_matches_reference(module, GQA(D, D, 0.0, 4, 4), maps.gqa(), forward=first)


def test_nanogpt_without_biases_matches_gqa_with_one_group_per_head():
    """GQA's out_proj has no bias: the zero the map invents for it is dropped, not loaded."""
    module = NanoGPTAttention(D, 2, CL, bias=False)
    tt.assert_matches_reference(module, GQA(D, D, 0.0, 2, 2), maps.fused_c_attn(), **FEW)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cached_decoding_matches_step_by_step(dtype):
    torch.manual_seed(0)
    report = tt.assert_decode_matches(
        CachedAttention(D, D, 2, CL), GQA(D, D, 0.0, 2, 2), dtype=dtype, **FEW
    )
    assert any(q.startswith("step 1") for q in report.worst)  # more than one chunk was run


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bug", ["pointer never advances", "mask without its offset"])
def test_cache_bugs_are_caught_at_the_second_chunk(bug, dtype):
    module, ref = CachedAttention(D, D, 2, CL, bug=bug), GQA(D, D, 0.0, 2, 2)
    tt.assert_matches_reference(module, ref, **FEW)  # a full forward cannot see the bug
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_decode_matches(module, ref, dtype=dtype)
    found = info.value.mismatch
    assert found.quantity.startswith("step 1") and found.example.chunks == (1, 1)
    line = str(info.value).split("replay: ", 1)[1]
    scope = dict(module=module, reference=ref)
    exec(
        line.replace(
            "torch_port.testing.compare_decode(", "found = torch_port.testing.compare_decode("
        ),
        scope,
    )
    assert scope["found"] == found


@pytest.mark.skipif(not hasattr(npattn, "Qwen3Attention"), reason="needs npattn.Qwen3Attention")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rope_goes_through_the_forward_adapter(dtype):
    """Llama 3's attention (Qwen3Attention without QK-norm, base 500000): the module takes
    cos and sin, which the forward adapter computes for the tokens it is given."""
    torch.manual_seed(0)
    module = LlamaStyleAttention(D, 4, 2)
    ref = npattn.Qwen3Attention(D, 4, 2, qk_norm=False, rope_base=500_000.0, context_length=CL)

    def with_rope(m, x):
        return m(x, *rope_cos_sin(x.shape[1], m.head_dim, 500_000.0, x.dtype))[0]

    tt.assert_matches_reference(module, ref, maps.gqa(), forward=with_rope, dtype=dtype, **FEW)
    with pytest.raises(tt.ReferenceMismatchError):  # without RoPE it is another function
        tt.assert_matches_reference(module, ref, maps.gqa(), forward=first, dtype=dtype)
