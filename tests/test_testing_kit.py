"""torch_port.testing, the kit users point at their own attention: correct modules pass, and
the classic bugs are caught, shrunk to the smallest case and reported with shapes and seed.
Shapes: x (B, T, d_in) -> (B, T, d_out)."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
from torch import nn  # noqa: E402

import npattn  # noqa: E402
import torch_port as tp  # noqa: E402
from torch_port import testing as tt  # noqa: E402

D, H, CL = 4, 2, 5  # d_in = d_out = 4 (head dim 2 > 1, so a missing 1/sqrt(d_k) shows), 2 heads
FEW = dict(max_examples=10)


def reference(qkv_bias=False):
    return npattn.MultiHeadAttention(D, D, CL, 0.0, H, qkv_bias=qkv_bias, rng=0)


class ChapterMHA(tp.MultiHeadAttention):
    """The chapter's MultiHeadAttention, with a switch for each bug the kit must catch."""

    def __init__(self, bug=None, qkv_bias=False):
        torch.manual_seed(0)
        super().__init__(D, D, CL, 0.0, H, qkv_bias)
        self.bug = bug

    def forward(self, x):
        b, T, _ = x.shape
        queries, keys, values = (
            lin(x).view(b, T, H, D // H).transpose(1, 2)  # (B, T, d_out) -> (B, H, T, E)
            for lin in (self.W_query, self.W_key, self.W_value)
        )
        if self.bug == "detached keys":  # forward unchanged, dL/dx wrong
            keys = keys.detach()
        attn_scores = queries @ keys.transpose(2, 3)  # (B, H, T, T)
        attn_scores = attn_scores.masked_fill(self.mask.bool()[:T, :T], -torch.inf)
        if self.bug != "no 1/sqrt(d_k)":
            attn_scores = attn_scores / keys.shape[-1] ** 0.5
        dim = -2 if self.bug == "softmax over queries" else -1
        attn_weights = torch.softmax(attn_scores, dim=dim)  # (B, H, T, T)
        context = (attn_weights @ values).transpose(1, 2).reshape(b, T, D)  # (B, T, d_out)
        if self.bug == "detached bias":  # output and dL/dx right, grad[out_proj.bias] wrong
            return context @ self.out_proj.weight.T + self.out_proj.bias.detach()
        if self.bug == "fails above 3 tokens" and T > 3:
            raise RuntimeError("shape mismatch")
        return self.out_proj(context)


class NotebookSDPAWithoutFlash(tp.MHAPyTorchSDPAWithoutFlash):
    """The bonus notebook's mask: triu(ones, 1).bool() passed to SDPA, where True = attend."""

    def __init__(self):
        super().__init__(D, D, H, CL)
        self.mask = torch.triu(torch.ones(CL, CL), diagonal=1).bool()


class TorchMHA(nn.Module):
    """nn.MultiheadAttention used directly; flip=True passes SDPA's polarity (True = attend),
    which nn.MultiheadAttention reads as True = not allowed."""

    def __init__(self, flip=False):
        super().__init__()
        torch.manual_seed(0)
        self.attn = nn.MultiheadAttention(D, H, bias=True, batch_first=True)
        self.register_buffer("attend", torch.tril(torch.ones(CL, CL, dtype=torch.bool)))
        self.flip = flip

    def forward(self, x):
        T = x.shape[1]
        mask = self.attend[:T, :T] if self.flip else ~self.attend[:T, :T]
        return self.attn(x, x, x, attn_mask=mask, need_weights=False)[0]


def torch_mha_map(p):
    """nn.MultiheadAttention's parameters in the chapter's keys (a pure rearrangement)."""
    out = {}
    for name, w, b in zip(
        ("W_query", "W_key", "W_value"),
        p["attn.in_proj_weight"].chunk(3),  # (3 * d_out, d_in) -> 3 x (d_out, d_in)
        p["attn.in_proj_bias"].chunk(3),
    ):
        out[f"{name}.weight"], out[f"{name}.bias"] = w, b
    out["out_proj.weight"] = p["attn.out_proj.weight"]
    out["out_proj.bias"] = p["attn.out_proj.bias"]
    return out


@pytest.mark.parametrize("name", tp.convert.CHAPTER_CLASSES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_chapter_classes_pass(name, dtype):
    args = {
        "SelfAttention_v1": (3, D),
        "SelfAttention_v2": (3, D, True),
        "CausalAttention": (3, D, CL, 0.2, True),
        "MultiHeadAttentionWrapper": (3, 2, CL, 0.2, H, True),
        "MultiHeadAttention": (3, D, CL, 0.2, H, True),
    }[name]
    module = getattr(tp, name)(*args)
    ref = getattr(npattn, name)(*args, rng=1)  # other weights: the kit copies them over
    tt.assert_matches_reference(module, ref, dtype=dtype, **FEW)
    assert module.training  # the user's module is left as it was


@pytest.mark.parametrize(
    "variant",
    [
        tp.MultiHeadAttentionCombinedQKV(D, D, H, CL, qkv_bias=True),
        tp.MHAEinsum(D, D, H, CL, qkv_bias=True),
        tp.MHAPyTorchScaledDotProduct(D, D, H, CL, qkv_bias=True),
        tp.MHAPyTorchSDPAWithoutFlash(D, D, H, CL, qkv_bias=True),
        tp.MHAPyTorchClass(D, D, H, CL, qkv_bias=True, need_weights=False),
    ],
    ids=lambda v: type(v).__name__,
)
def test_the_variants_pass_with_their_weight_map(variant):
    tt.assert_matches_reference(variant, reference(True), variant.to_mha_layout, **FEW)


def test_nn_multihead_attention_with_its_own_polarity_passes():
    tt.assert_matches_reference(TorchMHA(), reference(True), torch_mha_map, **FEW)


CAUGHT = [  # (module, weight_map, quantity reported, smallest T that shows the bug)
    (NotebookSDPAWithoutFlash(), "to_mha_layout", "output", 1),
    (TorchMHA(flip=True), torch_mha_map, "output", 1),
    (ChapterMHA("no 1/sqrt(d_k)"), None, "output", 2),  # one token: softmax of 1 score is 1
    (ChapterMHA("softmax over queries"), None, "output", 2),
    (ChapterMHA("detached keys"), None, "dx", 2),
    (ChapterMHA("detached bias"), None, "grad[out_proj.bias]", 1),
    (ChapterMHA("fails above 3 tokens"), None, "exception", 4),
]


@pytest.mark.parametrize(
    "module, weight_map, quantity, tokens",
    CAUGHT,
    ids=[getattr(m, "bug", None) or type(m).__name__ for m, *_ in CAUGHT],
)
def test_real_bugs_are_caught_shrunk_and_reported(module, weight_map, quantity, tokens):
    if weight_map == "to_mha_layout":
        weight_map = module.to_mha_layout
    ref = reference(qkv_bias=weight_map is torch_mha_map)
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_matches_reference(module, ref, weight_map)
    found = info.value.mismatch
    assert (found.quantity, found.example.batch, found.example.tokens) == (quantity, 1, tokens)
    message = str(info.value)
    assert f"{quantity} disagrees on x of shape (B=1, T={tokens}, d_in)" in message
    assert f"seed {found.example.seed}" in message and "replay" in message
    replayed = tt.compare(module, ref, found.example, weight_map)
    assert replayed == found  # the reported case replays to the same disagreement


def test_the_search_is_deterministic_and_seeded():
    module = ChapterMHA("no 1/sqrt(d_k)")
    runs = [tt.find_mismatch(module, reference(), seed=s) for s in (0, 0, 7)]
    assert runs[0] == runs[1]
    assert runs[2] is not None and runs[2].quantity == "output"


def test_float32_uses_float32_tolerances():
    ref = reference()
    module = tp.from_npattn(ref).float()
    tt.assert_matches_reference(module, ref, dtype=torch.float32, **FEW)
    with pytest.raises(tt.ReferenceMismatchError, match=r"rtol=1e-12, atol=1e-14"):
        tt.assert_matches_reference(module, ref, dtype=torch.float32, rtol=1e-12, atol=1e-14)


def test_a_wrong_or_incomplete_weight_map_is_reported():
    variant = tp.MHAEinsum(D, D, H, CL)
    with pytest.raises(ValueError, match="no value for the reference's parameters"):
        tt.assert_matches_reference(variant, reference(), {"W_query.weight": "W_query"})
    swapped = {**variant.to_mha_layout(dict(variant.named_parameters()))}

    def swap_q_k(p):
        out = variant.to_mha_layout(p)
        out["W_query.weight"], out["W_key.weight"] = out["W_key.weight"], out["W_query.weight"]
        return out

    assert swapped
    with pytest.raises(tt.ReferenceMismatchError, match="output disagrees"):
        tt.assert_matches_reference(variant, reference(), swap_q_k)
    with pytest.raises(TypeError, match="npattn module"):
        tt.assert_matches_reference(variant, ChapterMHA())


def test_the_kit_is_reachable_from_torch_port():
    assert tp.assert_matches_reference is tt.assert_matches_reference
    assert tp.testing is tt and tp.ReferenceMismatchError is tt.ReferenceMismatchError


def test_setup_errors_are_named_and_say_what_to_fix():
    module, ref = ChapterMHA(), reference()
    with pytest.raises(tt.KitSetupError, match=r"forward must take two arguments \(module, x\)"):
        tt.assert_matches_reference(module, ref, forward=lambda x: module(x))
    with pytest.raises(tt.KitSetupError, match=r"forward=lambda m, x: m\(x\)\[0\]"):
        tt.assert_matches_reference(module, ref, forward=lambda m, x: (m(x), None))
    with pytest.raises(tt.KitSetupError, match="no value for the reference's parameters"):
        tt.assert_matches_reference(module, ref, {"W_query.weight": "W_query.weight"})
    with pytest.raises(tt.KitSetupError, match="which ChapterMHA does not have"):
        tt.assert_matches_reference(module, ref, {"W_query.weight": "c_attn.weight"})
    with pytest.raises(tt.KitSetupError, match="KeyError: 'c_attn.weight'"):
        tt.assert_matches_reference(module, ref, tt.maps.fused_c_attn())
    with pytest.raises(tt.KitSetupError, match="has no parameters"):
        tt.assert_matches_reference(nn.Softmax(dim=-1), ref)
    with pytest.raises(tt.KitSetupError, match="must be a torch.nn.Module.*assert_sdpa_matches"):
        tt.assert_matches_reference(torch.nn.functional.scaled_dot_product_attention, ref)
    with pytest.raises(tt.KitSetupError, match=r"shape \(4, 2\), the reference's is \(4, 4\)"):
        tt.assert_matches_reference(
            module, ref, lambda p: {**p, "W_key.weight": p["W_key.weight"][:, :2]}
        )
    with pytest.raises(tt.ConfigurationMismatchError, match="head_dim=2.*head_dim=3"):
        tt.assert_matches_reference(module, npattn.MultiHeadAttention(D, 6, CL, 0.0, H, rng=0))
    for error in (tt.KitSetupError, tt.ConfigurationMismatchError):
        assert not issubclass(error, tt.ReferenceMismatchError)


def test_a_head_count_mismatch_is_named_as_such():
    module = tp.MultiHeadAttention(D, D, CL, 0.0, 1)  # one head; the reference has two
    with pytest.raises(tt.ConfigurationMismatchError, match="num_heads=1.*num_heads=2"):
        tt.assert_matches_reference(module, reference())


def test_parameters_the_map_never_reads_are_reported():
    module = ChapterMHA()
    module.gate = nn.Parameter(torch.ones(D))  # a parameter the reference has no place for
    with pytest.warns(tt.UnmappedParameterWarning, match=r"\['gate'\]"):
        report = tt.assert_matches_reference(module, reference(), **FEW)
    assert report.unread == ("gate",)


def test_forward_only_never_sets_requires_grad():
    """FlexAttention has no backward on CPU and refuses to run when anything requires grad."""
    module = tp.MHAPyTorchFlexAttention(D, D, H, CL, qkv_bias=True)
    ref = reference(True)
    found = tt.compare(module, ref, tt.Example(1, 2, 0), module.to_mha_layout)
    assert found.quantity == "exception" and "no backward on CPU" in found.detail
    report = tt.assert_matches_reference(
        module, ref, module.to_mha_layout, check_backward=False, max_examples=2, max_tokens=2
    )
    assert set(report.worst) == {"output", "output in train mode"}
    assert all(p.requires_grad for p in module.parameters())  # the user's module untouched


@pytest.mark.parametrize(
    "weight_map, words",
    [
        (lambda p: p["nope"], "raised KeyError"),
        (lambda p: list(p.values())[99], "raised IndexError"),
        (lambda p: p.nope, "raised AttributeError"),
        (lambda p: {"W_query.weight": "abc"}, "must be a tensor"),
        (lambda p: {k: None for k in p}, "must be a tensor"),
    ],
)
def test_a_weight_map_that_raises_or_gives_no_numbers_is_a_setup_error(weight_map, words):
    ref = npattn.MultiHeadAttention(4, 4, 8, 0.0, 2, rng=0)
    mod = tp.from_npattn(ref)
    with pytest.raises(tt.KitSetupError, match=words):
        tt.assert_matches_reference(mod, ref, weight_map, max_examples=2)
