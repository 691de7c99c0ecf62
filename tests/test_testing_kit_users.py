"""The testing kit on attention modules written the way users write them (tests/user_modules):
each layout passes with its ready map in float64 and float32, and every planted bug is caught
in both. Shapes: x (B, T, D) -> (B, T, D)."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
from torch import nn  # noqa: E402
from user_modules import (  # noqa: E402
    GPT2StyleAttention,
    LlamaStyleAttention,
    LowRankQueryAttention,
    MinGPTAttention,
    NanoGPTAttention,
    SeparateQKVAttention,
    causal_not_allowed,
    low_rank_map,
)

import npattn  # noqa: E402
from torch_port import testing as tt  # noqa: E402
from torch_port.testing import maps  # noqa: E402

D, H, CL = 8, 2, 6
FEW = dict(max_examples=8)
DTYPES = [torch.float64, torch.float32]


def mha(num_heads=H, qkv_bias=True):
    return npattn.MultiHeadAttention(D, D, CL, 0.0, num_heads, qkv_bias=qkv_bias, rng=0)


def first(m, x):
    return m(x)[0]


def torch_mha_causal(m, x):
    return m(x, x, x, attn_mask=causal_not_allowed(x.shape[1]), need_weights=False)[0]


def torch_mha_sdpa_polarity(m, x):  # the bug: SDPA's True = attend, read as True = masked
    return m(x, x, x, attn_mask=~causal_not_allowed(x.shape[1]), need_weights=False)[0]


def kinds():
    """(id, module, reference, weight_map, forward) for each layout users write."""
    torch.manual_seed(0)
    gqa = maps.gqa(num_heads=4, num_kv_heads=2)
    return [
        ("nanoGPT sdpa", NanoGPTAttention(D, H, CL), mha(), maps.fused_c_attn(), None),
        ("nanoGPT bias=False", NanoGPTAttention(D, H, CL, bias=False), mha(qkv_bias=False),
         maps.fused_c_attn(), None),
        ("nanoGPT explicit", NanoGPTAttention(D, H, CL, flash=False), mha(), maps.fused_c_attn(),
         None),
        ("minGPT", MinGPTAttention(D, H, CL), mha(), maps.fused_c_attn(), None),
        ("HF GPT-2 Conv1D", GPT2StyleAttention(D, H, CL), mha(), maps.hf_conv1d(), first),
        ("nn.MultiheadAttention", nn.MultiheadAttention(D, H, batch_first=True), mha(),
         maps.mha_in_proj(), torch_mha_causal),
        ("separate q/k/v", SeparateQKVAttention(D, H), mha(), maps.separate_qkv(o="out_proj"),
         None),
        ("Llama GQA vs MHA", LlamaStyleAttention(D, 4, 2), mha(4, False), gqa, first),
        ("low-rank query", LowRankQueryAttention(D, H, 3), mha(), low_rank_map, None),
    ]  # fmt: skip


KINDS = kinds()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, module, reference, weight_map, forward", KINDS,
                         ids=[k[0] for k in KINDS])  # fmt: skip
def test_user_layouts_pass_with_their_ready_map(
    name, module, reference, weight_map, forward, dtype
):
    before = {k: v.clone() for k, v in module.state_dict().items()}
    report = tt.assert_matches_reference(
        module, reference, weight_map, forward=forward, dtype=dtype, **FEW
    )
    assert report.unread == () and report.examples >= FEW["max_examples"]
    compared = [q for q in report.worst if q.startswith("grad[")]
    assert len(compared) == len(list(module.parameters()))  # every parameter's gradient
    assert all(torch.equal(v, module.state_dict()[k]) for k, v in before.items())


def bugs():
    torch.manual_seed(1)
    nano = [
        "no 1/sqrt(d_k)", "scale by model width", "sees one token ahead", "softmax over queries",
        "detached keys", "heads merged without transpose", "detached c_proj bias",
    ]  # fmt: skip
    cases = [
        (b, NanoGPTAttention(D, H, CL, flash=False, bug=b), mha(), maps.fused_c_attn(), None)
        for b in nano
    ]
    return cases + [
        ("triu mask to SDPA", NanoGPTAttention(D, H, CL, bug="triu mask to SDPA"), mha(),
         maps.fused_c_attn(), None),
        ("dropout in eval", NanoGPTAttention(D, H, CL, dropout=0.1, bug="dropout in eval"), mha(),
         maps.fused_c_attn(), None),
        ("nn.MultiheadAttention given SDPA's polarity",
         nn.MultiheadAttention(D, H, batch_first=True), mha(), maps.mha_in_proj(),
         torch_mha_sdpa_polarity),
        ("kv heads tiled, not interleaved",
         LlamaStyleAttention(D, 4, 2, bug="kv heads tiled, not interleaved"), mha(4, False),
         maps.gqa(num_heads=4, num_kv_heads=2), first),
        ("detached q_down", LowRankQueryAttention(D, H, 3, bug="detached q_down"), mha(),
         low_rank_map, None),
    ]  # fmt: skip


BUGS = bugs()
EXPECTED = {  # what each bug changes first: the output, dx, or a parameter gradient
    "detached keys": "dx",
    "detached q_down": "dx",
    "detached c_proj bias": "grad[c_proj.bias]",
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bug, module, reference, weight_map, forward", BUGS,
                         ids=[b[0] for b in BUGS])  # fmt: skip
def test_every_planted_bug_is_caught_in_float64_and_float32(
    bug, module, reference, weight_map, forward, dtype
):
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_matches_reference(module, reference, weight_map, forward=forward, dtype=dtype)
    found = info.value.mismatch
    assert found.quantity == EXPECTED.get(bug, "output")
    assert found.error > 100 * found.allowed  # caught by orders of magnitude, not by a hair


def test_the_reported_case_replays_when_the_printed_line_is_executed():
    module = NanoGPTAttention(D, H, CL, flash=False, bug="softmax over queries")
    reference, weight_map = mha(), maps.fused_c_attn()
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_matches_reference(
            module, reference, weight_map, forward=None, dtype=torch.float32, check_backward=False
        )
    line = str(info.value).split("replay: ", 1)[1]
    assert "dtype=torch.float32" in line and "check_backward=False" in line
    assert "forward=None" in line and "weight_map=weight_map" in line
    scope = dict(module=module, reference=reference, weight_map=weight_map)
    exec(line.replace("torch_port.testing.compare(", "found = torch_port.testing.compare("), scope)
    assert scope["found"] == info.value.mismatch


def test_a_zero_bias_the_map_invents_gets_no_gradient_and_is_not_compared():
    module = NanoGPTAttention(D, H, CL, bias=False)
    report = tt.assert_matches_reference(module, mha(), maps.fused_c_attn(), **FEW)
    modes = {"output under torch.no_grad()", "output in train mode"}
    compared = {"output", "dx", "grad[c_attn.weight]", "grad[c_proj.weight]"}
    assert set(report.worst) == compared | modes


def test_two_stacked_projections_follow_the_product_rule():
    """MHAPyTorchClass: nn.MultiheadAttention's own out_proj, then `proj`. The reference's
    out_proj is their product, and each factor gets its gradient by the product rule."""
    import torch_port as tp

    module = tp.MHAPyTorchClass(D, D, H, CL, qkv_bias=True, need_weights=False)
    with torch.no_grad():  # no longer the identity, so both factors matter
        module.multihead_attn.out_proj.weight.add_(0.3 * torch.randn(D, D))
        module.multihead_attn.out_proj.bias.normal_()

    def stacked(p):
        out = module.to_mha_layout(p)
        inner_w = p["multihead_attn.out_proj.weight"]
        out["out_proj.weight"] = p["proj.weight"] @ inner_w  # (D, D) @ (D, D)
        out["out_proj.bias"] = p["proj.weight"] @ p["multihead_attn.out_proj.bias"] + p["proj.bias"]
        return out

    report = tt.assert_matches_reference(module, mha(), stacked, **FEW)
    assert "grad[multihead_attn.out_proj.weight]" in report.worst
    with pytest.warns(tt.UnmappedParameterWarning, match="multihead_attn.out_proj.weight"):
        with pytest.raises(tt.ReferenceMismatchError, match="output disagrees"):
            tt.assert_matches_reference(module, mha(), module.to_mha_layout, **FEW)


def test_gradients_pulled_back_sum_over_repeated_heads():
    module = LlamaStyleAttention(D, 4, 2)
    gqa = maps.gqa(num_heads=4, num_kv_heads=2)
    weights = tt.weights.MappedWeights(module, mha(4, False), gqa)
    ones = {k: torch.ones(v.shape).numpy() for k, v in weights.mapped.items()}
    pulled = weights.pull_back(ones)
    assert set(pulled) == {"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"}
    assert (pulled["k_proj.weight"] == 2).all() and (pulled["q_proj.weight"] == 1).all()
