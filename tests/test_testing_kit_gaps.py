"""Bugs the kit's random draws alone would miss, each run explicitly: an accidental window
past the 16 tokens drawn for a long context, a cache that drops old tokens past 20, GQA heads
repeated in the wrong order, a tiled kernel wrong past its first block, a train-mode or
no-grad-only path, a dtype leak, hooks lost in the copy; and arguments the kit refuses.
Shapes: x (B, T, D) -> (B, T, D); q (B, H, L, E), k and v (B, Hkv, S, E)."""

import warnings

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")

import torch.nn.functional as F  # noqa: E402

import npattn  # noqa: E402
import torch_port as tp  # noqa: E402
from torch_port import testing as tt  # noqa: E402

D, H = 4, 2
FEW = dict(max_examples=4)


def mha(context=2048):
    return npattn.MultiHeadAttention(D, D, context, 0.0, num_heads=H, qkv_bias=True, rng=0)


class Windowed(tp.MultiHeadAttention):
    """Causal attention that also drops keys `window` or more tokens back."""

    window = 17

    def forward(self, x, use_cache=False):
        b, T, _ = x.shape
        E = self.head_dim
        q, k, v = (
            f(x).view(b, T, H, E).transpose(1, 2)  # (b, H, T, E)
            for f in (self.W_query, self.W_key, self.W_value)
        )
        i = torch.arange(T)
        allowed = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < self.window)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (b, H, T, E)
        return self.out_proj(o.transpose(1, 2).reshape(b, T, H * E))


def windowed(ref, window=17):
    m = tp.from_npattn(ref)
    m.__class__ = Windowed
    m.window = window
    return m


def test_a_window_past_the_drawn_tokens_is_caught_with_a_long_context():
    ref = mha(2048)
    with pytest.raises(tt.ReferenceMismatchError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore", tt.StructuralSizeWarning)
        tt.assert_matches_reference(windowed(ref), ref, **FEW)
    assert info.value.mismatch.example.tokens == 18  # narrowed between the rungs 17 and 33


def test_the_warning_names_the_token_counts_never_checked():
    ref = mha(2048)
    never = "token counts never checked: 18..32, 34..64, 66..2048"
    with pytest.warns(tt.StructuralSizeWarning, match=never):
        report = tt.assert_matches_reference(windowed(ref, window=2048), ref, **FEW)
    assert report.longer == (17, 33, 65) and report.unchecked == "18..32, 34..64, 66..2048"


class ShortCache(tp.MultiHeadAttention):
    """A cache that loses its oldest token once it holds more than 20."""

    def forward(self, x, use_cache=False):
        out = super().forward(x, use_cache)
        if use_cache and self.cache_k is not None and self.cache_k.shape[2] > 20:
            self.cache_k, self.cache_v = self.cache_k[:, :, 1:], self.cache_v[:, :, 1:]
        return out


def test_a_cache_that_drops_tokens_past_20_is_caught_with_a_long_context():
    ref = mha(2048)
    m = tp.from_npattn(ref)
    m.__class__ = ShortCache
    with pytest.raises(tt.ReferenceMismatchError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore", tt.StructuralSizeWarning)
        tt.assert_decode_matches(m, ref, **FEW)
    assert info.value.mismatch.example.chunks == (21, 1)  # shrunk to the first failure


def test_an_hf_layer_with_a_long_max_position_embeddings_is_checked_past_16_tokens():
    pytest.importorskip("transformers")
    from transformers import LlamaConfig
    from transformers.models.llama import modeling_llama as ml

    config = LlamaConfig(hidden_size=16, num_attention_heads=2, num_key_value_heads=1,
                         num_hidden_layers=1, max_position_embeddings=2048)  # fmt: skip
    config._attn_implementation = "eager"

    class Windowed(ml.LlamaAttention):  # drops keys 17 or more tokens back
        def forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kw):
            T, S = hidden_states.shape[1], attention_mask.shape[-1]
            i, j = torch.arange(T)[:, None] + (S - T), torch.arange(S)[None, :]
            far = (i - j) >= 17
            if attention_mask.dtype == torch.bool:
                attention_mask = attention_mask & ~far
            else:
                attention_mask = attention_mask.masked_fill(
                    far, torch.finfo(attention_mask.dtype).min
                )
            return super().forward(hidden_states, position_embeddings, attention_mask, **kw)

    Windowed.__name__ = Windowed.__qualname__ = "LlamaAttention"
    Windowed.__module__ = ml.__name__
    torch.manual_seed(0)
    layer = Windowed(config, layer_idx=0)
    with pytest.raises(tt.ReferenceMismatchError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore", tt.StructuralSizeWarning)
        tt.assert_hf_attention_matches(layer, decode=False, max_examples=3)
    assert info.value.mismatch.example.tokens == 18


def repeat_order(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                 enable_gqa=False):  # fmt: skip
    """GQA with the key heads tiled (repeat), not grouped (repeat_interleave): wrong."""
    if enable_gqa:
        g = q.shape[-3] // k.shape[-3]
        k, v = k.repeat(1, g, 1, 1), v.repeat(1, g, 1, 1)  # (B, H, S, E)
    return tt.plain_sdpa(q, k, v, attn_mask, 0.0, is_causal, scale)


def flash_repeat_order(q, k, v, softmax_scale=None, causal=False):
    """FlashAttention's convention (k and v may have fewer heads, no flag), heads tiled."""
    if k.shape[-3] != q.shape[-3]:
        g = q.shape[-3] // k.shape[-3]
        k, v = k.repeat(1, g, 1, 1), v.repeat(1, g, 1, 1)
    L, S = q.shape[-2], k.shape[-2]
    i, j = torch.arange(L)[:, None], torch.arange(S)[None, :]
    mask = j <= i + S - L if causal else None
    return tt.plain_sdpa(q, k, v, attn_mask=mask, scale=softmax_scale)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("fn", [repeat_order, flash_repeat_order], ids=lambda f: f.__name__)
def test_gqa_heads_in_the_wrong_order_are_caught_for_every_seed(fn, seed):
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_sdpa_matches(fn, max_examples=2, seed=seed)
    found = info.value.mismatch.example
    assert (found.heads, found.kv_heads) == (4, 2)


def test_a_flash_style_kernel_gets_gqa_shapes_and_no_enable_gqa():
    def flash_right(q, k, v, softmax_scale=None, causal=False):
        group = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(group, -3), v.repeat_interleave(group, -3)
        return flash_repeat_order(q, k, v, softmax_scale, causal)

    report = tt.assert_sdpa_matches(flash_right, max_examples=3)
    assert report.max_tokens == 65  # the explicit examples reach S = 65


def blocked(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
            enable_gqa=False):  # fmt: skip
    """Online softmax over key blocks of 8 that forgets to rescale its accumulator: right
    for S <= 8 only."""
    if enable_gqa:
        g = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(g, -3), v.repeat_interleave(g, -3)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    L, S = q.shape[-2], k.shape[-2]
    if is_causal:
        attn_mask = torch.ones(L, S, dtype=torch.bool).tril()
    bias = torch.zeros(L, S, dtype=q.dtype)
    if attn_mask is not None:
        bias = attn_mask
        if attn_mask.dtype == torch.bool:
            bias = torch.where(attn_mask, 0.0, -torch.inf).to(q.dtype)
    m = torch.full(q.shape[:-1] + (1,), -torch.inf, dtype=q.dtype)  # (B, H, L, 1)
    total, acc = torch.zeros_like(m), torch.zeros_like(q)
    for s0 in range(0, S, 8):
        scores = (q * scale) @ k[..., s0 : s0 + 8, :].transpose(-2, -1) + bias[..., s0 : s0 + 8]
        new = torch.maximum(m, scores.amax(-1, keepdim=True))
        safe = torch.where(new == -torch.inf, 0.0, new)
        p = torch.exp(scores - safe)
        total = total * torch.exp(torch.where(m == -torch.inf, safe, m) - safe) + p.sum(-1, True)
        acc = acc + p @ v[..., s0 : s0 + 8, :]  # the bug: acc is not rescaled
        m = new
    return torch.where(total > 0, acc / torch.where(total > 0, total, 1.0), 0.0)


def test_a_kernel_wrong_past_its_first_key_block_is_caught():
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_sdpa_matches(blocked, max_examples=3)
    assert info.value.mismatch.example.S == 9


def test_a_kwargs_kernel_never_gets_the_kits_own_arguments():
    def wrapper(q, k, v, **kwargs):
        return F.scaled_dot_product_attention(q, k, v, **kwargs)

    assert "dropout_mask" not in tt.oracle.accepted_options(wrapper)
    tt.assert_sdpa_matches(wrapper, max_examples=6)


class Plain(tp.MultiHeadAttention):
    """Causal attention through torch's SDPA; `causal` says when the mask is applied."""

    def causal(self):
        return True

    def forward(self, x, use_cache=False):
        b, T, _ = x.shape
        E = self.head_dim
        q, k, v = (
            f(x).view(b, T, H, E).transpose(1, 2)  # (b, H, T, E)
            for f in (self.W_query, self.W_key, self.W_value)
        )
        o = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal())  # (b, H, T, E)
        return self.out_proj(o.transpose(1, 2).reshape(b, T, H * E))


def planted(cls, ref=None):
    m = tp.from_npattn(ref or mha(16))
    m.__class__ = cls
    return m


class TrainModeBug(Plain):
    def causal(self):
        return not self.training  # the mask lost in the training branch


class NoGradBug(Plain):
    def causal(self):
        return torch.is_grad_enabled()  # a fast inference path without the mask


class DtypeLeak(Plain):
    def forward(self, x, use_cache=False):
        return super().forward(x).float()


@pytest.mark.parametrize(
    "cls, quantity",
    [
        (TrainModeBug, "output in train mode"),
        (NoGradBug, "output under torch.no_grad()"),
        (DtypeLeak, "output dtype"),
    ],
    ids=["train mode", "no grad", "dtype leak"],
)
def test_bugs_outside_eval_mode_with_grad_and_dtype_leaks_are_caught(cls, quantity):
    ref = mha(16)
    tt.assert_matches_reference(planted(Plain, ref), ref, **FEW)  # the bug-free twin passes
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_matches_reference(planted(cls, ref), ref, **FEW)
    assert info.value.mismatch.quantity == quantity
    if cls is DtypeLeak:
        assert "torch.float32 for a torch.float64 input" in str(info.value)


def test_active_dropout_skips_the_train_mode_run_and_says_so():
    ref = mha(16)
    m = planted(TrainModeBug, ref)
    m.dropout = torch.nn.Dropout(0.1)
    report = tt.assert_matches_reference(m, ref, **FEW)
    assert "train mode" in report.not_run[0] and "dropout (p=0.1)" in report.not_run[0]


def test_a_hook_on_a_parameter_is_kept_in_the_kits_copy():
    ref = mha(16)
    m = tp.from_npattn(ref)
    m.W_key.weight.register_hook(lambda g: g * 0)  # zeroes W_key's gradient
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_matches_reference(m, ref, **FEW)
    assert info.value.mismatch.quantity == "grad[W_key.weight]"


def test_a_frozen_parameter_the_map_reads_is_warned_about():
    ref = mha(16)
    m = tp.from_npattn(ref)
    m.W_query.weight.requires_grad_(False)
    with pytest.warns(tt.UnmappedParameterWarning, match=r"\['W_query.weight'\] .* frozen"):
        report = tt.assert_matches_reference(m, ref, **FEW)
    assert report.frozen == ("W_query.weight",)


ref16 = mha(16)
CALLS = {
    "module": lambda **kw: tt.assert_matches_reference(tp.from_npattn(ref16), ref16, **kw),
    "decode": lambda **kw: tt.assert_decode_matches(tp.from_npattn(ref16), ref16, **kw),
    "sdpa": lambda **kw: tt.assert_sdpa_matches(F.scaled_dot_product_attention, **kw),
}


@pytest.mark.parametrize(
    "call, argument, value",
    [
        ("module", "max_tokens", 0),
        ("module", "max_batch", 0),
        ("module", "max_examples", 0),
        ("module", "seed", -1),
        ("module", "dtype", torch.int32),
        ("decode", "max_chunk", 0),
        ("decode", "max_tokens", -2),
        ("sdpa", "max_heads", 0),
        ("sdpa", "max_head_dim", 0),
        ("sdpa", "max_tokens", 0),
        ("sdpa", "device", "meta"),
    ],
)
def test_arguments_out_of_range_are_setup_errors_naming_them(call, argument, value):
    with pytest.raises(tt.KitSetupError, match=argument):
        CALLS[call](**{"max_examples": 2, argument: value})


def test_an_example_past_the_context_length_is_a_setup_error():
    with pytest.raises(tt.KitSetupError, match="example has 40 tokens, past .* 16"):
        tt.compare(tp.from_npattn(ref16), ref16, tt.Example(1, 40, 0))
    with pytest.raises(tt.KitSetupError, match="example has 17 tokens"):
        tt.compare_decode(tp.from_npattn(ref16), ref16, tt.DecodeExample(1, (16, 1), 0))


@pytest.mark.parametrize("mode", ["train", "no_grad"])
def test_an_hf_layer_wrong_only_in_train_mode_or_without_grad_is_caught(mode):
    pytest.importorskip("transformers")
    from transformers import LlamaConfig
    from transformers.models.llama import modeling_llama as ml

    config = LlamaConfig(hidden_size=16, num_attention_heads=2, num_key_value_heads=1,
                         num_hidden_layers=1, max_position_embeddings=16)  # fmt: skip
    config._attn_implementation = "eager"

    class Planted(ml.LlamaAttention):  # the softmax scale 2% off in one mode only
        def forward(self, *args, **kwargs):
            wrong = self.training if mode == "train" else not torch.is_grad_enabled()
            scaling = self.scaling
            self.scaling = scaling * (1.02 if wrong else 1.0)
            try:
                return super().forward(*args, **kwargs)
            finally:
                self.scaling = scaling

    Planted.__name__ = Planted.__qualname__ = "LlamaAttention"
    Planted.__module__ = ml.__name__
    torch.manual_seed(0)
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_hf_attention_matches(Planted(config, layer_idx=0), decode=False, **FEW)
    want = "output in train mode" if mode == "train" else "output under torch.no_grad()"
    assert info.value.mismatch.quantity == want


class NaiveSoftmax(tp.MultiHeadAttention):
    """exp(scores) without the row max subtracted: overflows in float16 on large logits."""

    def forward(self, x, use_cache=False):
        b, T, _ = x.shape
        heads, E = self.num_heads, self.head_dim
        q, k, v = (
            f(x).view(b, T, heads, E).transpose(1, 2)  # (b, heads, T, E)
            for f in (self.W_query, self.W_key, self.W_value)
        )
        i = torch.arange(T)
        e = torch.exp((q @ k.transpose(-2, -1)) * E**-0.5)  # (b, heads, T, T)
        e = e.masked_fill(i[None, :] > i[:, None], 0)
        o = (e / e.sum(-1, keepdim=True)) @ v  # (b, heads, T, E)
        return self.out_proj(o.transpose(1, 2).reshape(b, T, heads * E))


def test_large_logits_are_drawn_and_an_overflowing_softmax_is_caught():
    ref = npattn.MultiHeadAttention(64, 64, 64, 0.0, num_heads=4, qkv_bias=True, rng=0)
    with pytest.raises(tt.ReferenceMismatchError, match="scaled by") as info:
        tt.assert_matches_reference(planted(NaiveSoftmax, ref), ref, dtype=torch.float16, **FEW)
    assert info.value.mismatch.example.scale > 1
    report = tt.assert_matches_reference(tp.from_npattn(ref), ref, dtype=torch.float16, **FEW)
    assert report.examples > FEW["max_examples"]  # the explicit large-input example ran too


def first_head_mask(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False):  # fmt: skip
    """Reads only the first head of a 4-D mask: right for (L, S) masks only."""
    if attn_mask is not None and attn_mask.dim() == 4:
        attn_mask = attn_mask[:, :1]
    return F.scaled_dot_product_attention(q, k, v, attn_mask, 0.0, is_causal, scale=scale,
                                          enable_gqa=enable_gqa)  # fmt: skip


def contiguous_only(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False):  # fmt: skip
    """view() where reshape() was needed: fails on the transposed views callers pass."""
    B, heads, L, E = q.shape
    q = q.view(B * heads, L, E).view(B, heads, L, E)
    return F.scaled_dot_product_attention(q, k, v, attn_mask, 0.0, is_causal, scale=scale,
                                          enable_gqa=enable_gqa)  # fmt: skip


@pytest.mark.parametrize("fn", [first_head_mask, contiguous_only], ids=lambda f: f.__name__)
def test_4d_masks_and_non_contiguous_inputs_are_drawn(fn):
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_sdpa_matches(fn, max_examples=3)
    found = info.value.mismatch.example
    assert found.mask.endswith("4d") if fn is first_head_mask else found.strided


class MaskOnce(Plain):
    """Builds its causal mask on the first call and reuses it: unmasked past that length."""

    def forward(self, x, use_cache=False):
        b, T, _ = x.shape
        if not hasattr(self, "first"):
            self.first = torch.ones(T, T, dtype=torch.bool).tril()
        n = min(T, self.first.shape[0])
        mask = torch.ones(T, T, dtype=torch.bool)
        mask[:n, :n] = self.first[:n, :n]
        q, k, v = (
            f(x).view(b, T, H, self.head_dim).transpose(1, 2)  # (b, H, T, E)
            for f in (self.W_query, self.W_key, self.W_value)
        )
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (b, H, T, E)
        return self.out_proj(o.transpose(1, 2).reshape(b, T, H * self.head_dim))


def test_a_failure_that_depends_on_earlier_calls_says_so():
    ref = mha(16)
    with pytest.raises(tt.ReferenceMismatchError, match="depended on earlier calls") as info:
        tt.assert_matches_reference(planted(MaskOnce, ref), ref, **FEW)
    assert tt.compare(planted(MaskOnce, ref), ref, info.value.mismatch.example) is None
    with pytest.raises(tt.ReferenceMismatchError) as info:  # a plain bug: no such sentence
        tt.assert_matches_reference(planted(TrainModeBug, ref), ref, **FEW)
    assert "earlier calls" not in str(info.value)
