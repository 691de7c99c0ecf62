"""The kit's blind spots, each closed: a bug that shows only past a structural size of the
reference (its window, its cache length), a NaN, an SDPA option never drawn, a verdict that
depended on the caller's source, a modified reference trusted, a setting lost in conversion.
Shapes: x (B, T, D) -> (B, T, D)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")

import npattn  # noqa: E402
import torch_port as tp  # noqa: E402
from torch_port import testing as tt  # noqa: E402

D, H = 4, 2
FEW = dict(max_examples=6)


class SWAWithBug(tp.MultiHeadAttentionWithSWA):
    """The sliding-window class with a switch: `window` replaces the one the mask uses (None:
    no window at all); `keep` trims the cache to that many positions after each call."""

    def __init__(self, window, *, mask_window="same", keep=None):
        torch.manual_seed(0)
        super().__init__(D, D, 0.0, H, True, window)
        self.mask_window, self.keep = mask_window, keep

    def forward(self, x, use_cache=False):
        W = self.sliding_window_size
        if self.mask_window != "same":
            self.sliding_window_size = self.mask_window
        try:
            out = super().forward(x, use_cache)
        finally:
            self.sliding_window_size = W
        if use_cache and self.keep is not None and self.cache_k.shape[2] > self.keep:
            self.cache_k = self.cache_k[:, :, -self.keep :]
            self.cache_v = self.cache_v[:, :, -self.keep :]
        return out


def swa(window):
    return npattn.MultiHeadAttentionWithSWA(D, D, 0.0, H, True, window, rng=0)


def test_the_reference_sizes_are_read_and_crossed():
    report = tt.assert_matches_reference(SWAWithBug(17), swa(17), **FEW)
    assert report.sizes == {"cache length": 17, "window": 17}
    assert report.max_tokens == 36 and set(report.boundaries) == {16, 17, 18, 35}


def test_a_module_without_its_window_is_caught_past_the_window():
    ref = swa(16)
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_matches_reference(SWAWithBug(16, mask_window=None), ref, **FEW)
    assert info.value.mismatch.example.tokens == 17  # the first T the window cuts


def test_a_window_one_wider_is_caught():
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_matches_reference(SWAWithBug(16, mask_window=17), swa(16), **FEW)
    assert info.value.mismatch.example.tokens == 17  # query 16 sees key 0


def test_a_cache_one_position_short_is_caught_past_the_window():
    W = 17
    tt.assert_decode_matches(SWAWithBug(W), swa(W), **FEW)
    module = SWAWithBug(W, keep=W - 2)
    tt.assert_matches_reference(module, swa(W), **FEW)  # no cache in a full forward
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_decode_matches(module, swa(W), **FEW)
    assert sum(info.value.mismatch.example.chunks) >= W  # it needs W - 1 cached positions


def chapter_mha(nan_at=None):
    torch.manual_seed(0)
    module = tp.MultiHeadAttention(D, D, 6, 0.0, H, True)
    if nan_at is not None:
        with torch.no_grad():
            getattr(module, nan_at).weight[0, 0] = float("nan")
    return module


def test_nan_in_the_truth_is_no_agreement():
    """NaN weights make both sides NaN: NaN == NaN must not pass, and the message says the
    reference itself is broken."""
    module, ref = chapter_mha("W_value"), npattn.MultiHeadAttention(D, D, 6, 0.0, H, True)
    for check_backward in (False, True):
        with pytest.raises(tt.ReferenceMismatchError, match="npattn reference's output holds"):
            tt.assert_matches_reference(module, ref, check_backward=check_backward, **FEW)
    found = tt.compare(module, ref, tt.Example(1, 2, 0))
    assert "reference is broken" in found.detail and found.error != found.error


def test_nan_from_the_module_alone_is_named():
    class NaNAtThree(tp.MultiHeadAttention):
        def forward(self, x):
            out = super().forward(x)  # (B, T, D); token 2 made NaN
            if x.shape[1] < 3:
                return out
            return torch.cat([out[:, :2], out[:, 2:3] * float("nan"), out[:, 3:]], dim=1)

    torch.manual_seed(0)
    module = NaNAtThree(D, D, 6, 0.0, H, True)
    ref = npattn.MultiHeadAttention(D, D, 6, 0.0, H, True)
    with pytest.raises(tt.ReferenceMismatchError, match="entries are NaN") as info:
        tt.assert_matches_reference(module, ref, **FEW)
    assert info.value.mismatch.example.tokens == 3


CALLER = """
import hashlib

import torch

import npattn
import torch_port as tp
from torch_port import testing as tt

{line}
digest = hashlib.sha256()


class Recorder(tp.MultiHeadAttention):
    def forward(self, x):
        digest.update(x.detach().numpy().tobytes())  # every input the search tries
        return super().forward(x)


torch.manual_seed(0)
m = Recorder(4, 4, 64, 0.0, 2, True)
ref = npattn.MultiHeadAttention(4, 4, 64, 0.0, 2, True)
for seed in range(8):
    tt.find_mismatch(m, ref, max_examples=40, check_backward=False, seed=seed)
print(digest.hexdigest())
"""


def test_the_search_does_not_depend_on_the_callers_source(tmp_path):
    """Hypothesis draws integers it finds in the source of imported local modules; the kit
    switches that off, so an unused line in the caller's file changes nothing."""
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    runs = []
    for name, line in (("caller_a.py", "_unused = (60, 200)"), ("caller_b.py", "")):
        path = tmp_path / name
        path.write_text(CALLER.format(line=line))
        out = subprocess.run(
            [sys.executable, str(path)], env=env, capture_output=True, text=True, check=True
        )
        runs.append(out.stdout.strip())
    assert runs[0] == runs[1]


def test_the_callers_own_hypothesis_keeps_its_constants():
    from hypothesis.internal.conjecture import providers

    before = providers._get_local_constants
    tt.find_mismatch(chapter_mha(), npattn.MultiHeadAttention(D, D, 6, 0.0, H, True), **FEW)
    assert providers._get_local_constants is before


def test_a_reference_with_an_edited_mask_is_refused():
    """Both sides without the causal mask agree; the kit must not take such a reference."""
    module, ref = chapter_mha(), npattn.MultiHeadAttention(D, D, 6, 0.0, H, True)
    with torch.no_grad():
        module.mask.zero_()
    ref.mask[...] = 0.0
    with pytest.raises(tt.KitSetupError, match=r"was modified.*mask \(the causal mask buffer"):
        tt.assert_matches_reference(module, ref, **FEW)


class StoredTables(npattn.MultiHeadAttention):
    """An npattn module that stores RoPE tables as attributes, with the settings they come
    from (as npattn's Qwen3Attention did before its tables were derived from its config)."""

    def __init__(self, *args, **kwargs):
        from npattn.ops.rope import compute_rope_params

        super().__init__(*args, **kwargs)
        self.rope_base, self.head_dim = 10_000.0, D // H
        self.cos, self.sin = compute_rope_params(self.head_dim, self.rope_base, self.context_length)


@pytest.mark.parametrize("table", ["cos", "sin"])
def test_a_reference_with_edited_rope_tables_is_refused(table):
    ref = npattn.Qwen3Attention(D, H, 1, context_length=8, rng=0)
    with pytest.raises((AttributeError, ValueError)):  # npattn's own: derived, read-only
        setattr(ref, table, getattr(ref, table) * 0 + 1)
    with pytest.raises((AttributeError, ValueError)):
        getattr(ref, table)[...] = 1.0
    stored = StoredTables(D, D, 6, 0.0, H, True)
    tt.check_reference_tables(stored)  # as built: taken
    setattr(stored, table, getattr(stored, table) * 0 + 1)  # no rotation
    with pytest.raises(tt.KitSetupError, match=rf"modified.*{table} \(the RoPE table"):
        tt.check_reference_tables(stored)


def test_an_unmodified_float32_qwen3_reference_is_taken():
    torch.manual_seed(0)
    module = tp.Qwen3Attention(D, H, 1, context_length=8)
    ref = npattn.Qwen3Attention(D, H, 1, context_length=8, rng=0).astype(np.float32)
    tt.assert_matches_reference(module, ref, **FEW)


def qwen3_with_eps(eps):
    ref = npattn.Qwen3Attention(D, H, 1, context_length=8, rng=0)
    ref.q_norm.eps = ref.k_norm.eps = eps  # set by hand: no constructor argument takes it
    return ref


def test_conversion_keeps_a_hand_set_eps():
    ref = qwen3_with_eps(1e-2)
    twin = tp.from_npattn(ref)
    assert (twin.q_norm.eps, twin.k_norm.eps) == (1e-2, 1e-2)
    back = tp.to_npattn(twin)
    assert (back.q_norm.eps, back.k_norm.eps) == (1e-2, 1e-2)
    ref.q_norm.offset = 1.0  # Gemma's x_hat * (1 + w), set by hand
    assert tp.from_npattn(ref).q_norm.offset == 1.0


def test_a_wrong_eps_fails_in_float32_whatever_the_twin():
    """The float32 bound is relative to plain torch's error; measured on a twin that lost
    the eps, that error is the eps's own effect, and the wrong module would pass."""
    torch.manual_seed(0)
    module = tp.Qwen3Attention(D, H, 1, context_length=8)  # eps 1e-6: the reference's is 1e-2
    with pytest.raises(tt.ReferenceMismatchError, match="output disagrees"):
        tt.assert_matches_reference(module, qwen3_with_eps(1e-2), dtype=torch.float32, **FEW)
    module.q_norm.eps = module.k_norm.eps = 1e-2
    tt.assert_matches_reference(module, qwen3_with_eps(1e-2), dtype=torch.float32, **FEW)


def test_a_twin_that_computes_something_else_is_not_the_yardstick(monkeypatch):
    from torch_port.testing import setup

    real = tp.from_npattn

    def loses_eps(module, **kw):
        twin = real(module, **kw)
        twin.q_norm.eps = twin.k_norm.eps = 1e-6
        return twin

    monkeypatch.setattr(tp, "from_npattn", loses_eps)
    ref64 = qwen3_with_eps(1e-2).astype(np.float64)
    plain = setup.plain_yardstick(
        ref64, torch.float32, torch.device("cpu"), tt.precision.rule_for(torch.float32)
    )
    assert isinstance(plain, setup.NumpyAtDtype)  # not the twin that lost the eps
    torch.manual_seed(0)
    module = tp.Qwen3Attention(D, H, 1, context_length=8)
    with pytest.raises(tt.ReferenceMismatchError, match="output disagrees"):
        tt.assert_matches_reference(module, qwen3_with_eps(1e-2), dtype=torch.float32, **FEW)


class NeedsRope(tp.MultiHeadAttention):
    """A forward that takes more than x: the kit cannot call it as module(x)."""

    def forward(self, x, cos, sin):
        return super().forward(x)


class CallsItsChildWrongly(tp.MultiHeadAttention):
    def forward(self, x):
        return self.out_proj(x, x)  # a bug inside the module, not a setup problem


def test_a_forward_the_kit_cannot_call_is_a_setup_error():
    torch.manual_seed(0)
    ref = npattn.MultiHeadAttention(D, D, 6, 0.0, H, True)
    with pytest.raises(tt.KitSetupError, match=r"cannot be called the way the kit calls it"):
        tt.assert_matches_reference(NeedsRope(D, D, 6, 0.0, H, True), ref, **FEW)
    with pytest.raises(tt.KitSetupError, match=r"step\(module, x\)"):
        tt.assert_decode_matches(chapter_mha(), ref, step=lambda m, x: m(x, cache=True), **FEW)
    with pytest.raises(tt.ReferenceMismatchError, match="exception disagrees"):
        tt.assert_matches_reference(CallsItsChildWrongly(D, D, 6, 0.0, H, True), ref, **FEW)

    def needs_mask(q, k, v, mask):
        return tt.plain_sdpa(q, k, v, attn_mask=mask)

    with pytest.raises(tt.KitSetupError, match="needs_mask cannot be called"):
        tt.assert_sdpa_matches(needs_mask, **FEW)


def test_lists_in_messages_are_sorted():
    module = chapter_mha()
    ref = npattn.MultiHeadAttention(D, D, 6, 0.0, H, True)
    with pytest.raises(tt.KitSetupError) as info:
        tt.assert_matches_reference(module, ref, {"out_proj.weight": "out_proj.weight"})
    missing = str(info.value).split("parameters ", 1)[1].split("]", 1)[0] + "]"
    names = eval(missing)  # the list as printed
    assert names == sorted(names) and len(names) == 7


def test_the_context_length_is_reached_and_a_short_max_tokens_is_named():
    report = tt.assert_matches_reference(
        chapter_mha(), npattn.MultiHeadAttention(D, D, 6, 0.0, H, True), **FEW
    )
    assert report.boundaries == (5, 6)  # T = context_length - 1 and context_length
    with pytest.warns(tt.StructuralSizeWarning, match=r"window 17; it runs at most 8 tokens"):
        report = tt.assert_matches_reference(SWAWithBug(17), swa(17), max_tokens=8, **FEW)
    assert report.not_reached == ["cache length 17", "window 17"]


def with_positions(m, x, positions=None, key_padding_mask=None):
    return m(x, positions=positions, key_padding_mask=key_padding_mask)


def attention_pair():
    """RoPE with dynamic NTK scaling: past 4 positions the frequencies depend on the largest
    position, so absolute positions matter (plain RoPE only sees differences)."""
    rope = npattn.RoPE(scaling=npattn.DynamicNTK(factor=2.0, original_max_position_embeddings=4))
    config = npattn.AttentionConfig(hidden_size=8, num_heads=2, num_kv_heads=1, rope=rope)
    torch.manual_seed(0)
    return tp.Attention(config), npattn.Attention(config, rng=0)


def test_positions_and_left_padding_are_drawn_when_the_forward_takes_them():
    module, ref = attention_pair()
    seen = []

    def recording(m, x, positions=None, key_padding_mask=None):
        seen.append((positions is not None, key_padding_mask is not None))
        return with_positions(m, x, positions, key_padding_mask)

    for dtype in (torch.float64, torch.float32):
        tt.assert_matches_reference(module, ref, forward=recording, dtype=dtype, **FEW)
    assert (True, True) in seen and (True, False) in seen  # padded, and shifted positions


@pytest.mark.parametrize("bug", ["positions ignored", "padding ignored"])
def test_a_module_that_ignores_positions_or_padding_is_caught(bug):
    module, ref = attention_pair()

    def buggy(m, x, positions=None, key_padding_mask=None):
        if bug == "positions ignored":
            positions = None  # the module's default: 0 .. T - 1
        else:
            key_padding_mask = None
        return with_positions(m, x, positions, key_padding_mask)

    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_matches_reference(module, ref, forward=buggy, **FEW)
    example = info.value.mismatch.example
    assert example.start or any(example.pads)
    line = str(info.value).split("replay: ", 1)[1]
    scope = dict(module=module, reference=ref, forward=buggy)
    exec(line.replace("torch_port.testing.compare(", "found = torch_port.testing.compare("), scope)
    assert scope["found"] == info.value.mismatch
