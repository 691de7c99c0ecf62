"""assert_sdpa_matches, the kernel oracle: torch's own SDPA and a hand-written one pass, in
float64 and float32; the classic kernel bugs are caught in both, and NaN is named NaN.
Shapes: q (B, H, L, E), k and v (B, Hkv, S, E)."""

import functools
import math
import unittest

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
import torch.nn.functional as F  # noqa: E402
from user_modules import my_sdpa  # noqa: E402

from torch_port import testing as tt  # noqa: E402

FEW = dict(max_examples=12)
DTYPES = [torch.float64, torch.float32]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fn", [F.scaled_dot_product_attention, my_sdpa], ids=lambda f: f.__name__)
def test_correct_kernels_pass(fn, dtype):
    report = tt.assert_sdpa_matches(fn, dtype=dtype, **FEW)
    assert set(report.worst) == {"out", "dq", "dk", "dv"}


def test_the_options_come_from_the_signature():
    assert tt.oracle.accepted_options(my_sdpa) == tt.oracle.OPTIONS
    assert "dropout_mask" not in tt.oracle.accepted_options(F.scaled_dot_product_attention)

    def bare(q, k, v):
        return F.scaled_dot_product_attention(q, k, v)

    assert tt.oracle.accepted_options(bare) == ()
    tt.assert_sdpa_matches(bare, **FEW)  # only what it accepts is drawn


def test_dropout_goes_through_the_explicit_keep_mask():
    ex = tt.SDPAExample(1, 2, 1, 3, 4, 2, "bool", None, 0.4, seed=3)
    assert tt.compare_sdpa(my_sdpa, ex) is None

    def drops_unscaled(q, k, v, dropout_p=0.0, dropout_mask=None, **kw):
        out = my_sdpa(q, k, v, **kw)
        return out if dropout_mask is None else my_sdpa(q, k, v, dropout_mask=dropout_mask, **kw)

    assert tt.compare_sdpa(drops_unscaled, ex) is not None  # forgets the 1 / (1 - p)


BUGS = {  # bug -> what the shrunk case must show
    "ignores scale": "scale=",
    "mask polarity": "mask=bool",
    "repeat, not repeat_interleave": "k and v (1, 2,",
    "NaN on fully masked rows": "NaN",
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bug", BUGS)
def test_kernel_bugs_are_caught(bug, dtype):
    fn = functools.partial(my_sdpa, bug=bug)
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_sdpa_matches(fn, dtype=dtype)
    message = str(info.value)
    assert BUGS[bug] in message.splitlines()[0]
    assert "e+308" not in message
    line = message.split("replay: ", 1)[1]
    scope = {"fn": fn}
    exec(
        line.replace(
            "torch_port.testing.compare_sdpa(", "found = torch_port.testing.compare_sdpa("
        ),
        scope,
    )
    assert scope["found"] == info.value.mismatch


def test_nan_is_reported_as_nan():
    fn = functools.partial(my_sdpa, bug="NaN on fully masked rows")
    with pytest.raises(tt.ReferenceMismatchError) as info:
        tt.assert_sdpa_matches(fn)
    found = info.value.mismatch
    assert found.error != found.error  # NaN
    assert "normwise error NaN" in str(info.value) and "got NaN" in str(info.value)


def test_cuda_is_used_when_asked_or_skipped_cleanly():
    if not torch.cuda.is_available():
        with pytest.raises(unittest.SkipTest, match="cuda"):  # pytest shows it as a skip
            tt.assert_sdpa_matches(my_sdpa, device="cuda")
        pytest.skip("no CUDA device")
    seen = []

    def on_device(q, k, v, **kw):
        seen.append(q.device.type)
        return my_sdpa(q, k, v, **kw)

    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        tt.assert_sdpa_matches(on_device, device="cuda", dtype=dtype, **FEW)
        tt.assert_sdpa_matches(F.scaled_dot_product_attention, device="cuda", dtype=dtype, **FEW)
    assert set(seen) == {"cuda"}
    with pytest.raises(tt.ReferenceMismatchError):
        tt.assert_sdpa_matches(functools.partial(my_sdpa, bug="mask polarity"), device="cuda")


def test_a_module_is_not_a_kernel():
    with pytest.raises(tt.KitSetupError, match="assert_matches_reference"):
        tt.assert_sdpa_matches(torch.nn.Linear(2, 2))


# FlashAttention's reference implementation (flash-attn's tests: construct_local_mask and
# attention_ref), transcribed without einops; q (B, L, H, E), k and v (B, S, Hkv, E).
def construct_local_mask(seqlen_q, seqlen_k, window_size=(-1, -1), query_padding_mask=None,
                         key_padding_mask=None, device=None):  # fmt: skip
    row_idx = torch.arange(seqlen_q, device=device, dtype=torch.long)[:, None]
    col_idx = torch.arange(seqlen_k, device=device, dtype=torch.long)
    sk = seqlen_k if key_padding_mask is None else key_padding_mask.sum(-1)[:, None, None, None]
    sq = seqlen_q if query_padding_mask is None else query_padding_mask.sum(-1)[:, None, None, None]
    if window_size[0] < 0:
        return col_idx > row_idx + sk - sq + window_size[1]
    sk = torch.full_like(col_idx, seqlen_k) if key_padding_mask is None else sk
    return torch.logical_or(
        col_idx > torch.minimum(row_idx + sk - sq + window_size[1], sk),
        col_idx < row_idx + sk - sq - window_size[0],
    )


def attention_ref(q, k, v, query_padding_mask=None, key_padding_mask=None, causal=False,
                  window_size=(-1, -1), softcap=0.0):  # fmt: skip
    if causal:
        window_size = (window_size[0], 0)
    seqlen_q, seqlen_k = q.shape[1], k.shape[1]
    k = k.repeat_interleave(q.shape[2] // k.shape[2], dim=2)  # "b s h d -> b s (h g) d"
    v = v.repeat_interleave(q.shape[2] // v.shape[2], dim=2)
    d = q.shape[-1]
    scores = torch.einsum("bthd,bshd->bhts", q / math.sqrt(d), k)
    if softcap > 0:
        scores = scores / softcap
        scores = scores.tanh()
        scores = scores * softcap
    if key_padding_mask is not None:
        scores = scores.masked_fill(~key_padding_mask[:, None, None, :], float("-inf"))
    local_mask = None
    if window_size[0] >= 0 or window_size[1] >= 0:
        local_mask = construct_local_mask(
            seqlen_q, seqlen_k, window_size, query_padding_mask, key_padding_mask, q.device
        )
        scores = scores.masked_fill(local_mask, float("-inf"))
    attention = torch.softmax(scores, dim=-1).to(v.dtype)
    if local_mask is not None:  # rows entirely masked give 0, not NaN
        attention = attention.masked_fill(torch.all(local_mask, dim=-1, keepdim=True), 0.0)
    if query_padding_mask is not None:
        attention = attention.masked_fill(~query_padding_mask[:, None, :, None], 0.0)
    output = torch.einsum("bhts,bshd->bthd", attention, v)
    if query_padding_mask is not None:
        output = output.masked_fill(~query_padding_mask[:, :, None, None], 0.0)
    return output, attention


def flash_style(q, k, v, causal=False, window_size=(-1, -1), softcap=0.0,
                key_padding_mask=None, query_padding_mask=None):  # fmt: skip
    """attention_ref as a user's kernel: FlashAttention's options, SDPA's (B, H, L, E)."""
    out, _ = attention_ref(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), query_padding_mask,
        key_padding_mask, causal, window_size, softcap,
    )  # fmt: skip
    return out.transpose(1, 2)


def with_sinks(q, k, v, sinks=None, softcap=None, scale=None, zeros_when_extra=False):
    """gpt-oss's attention: sinks (H,) join each row's softmax; zeros_when_extra plants the
    bug of a kernel that silently returns zeros for the options it does not implement."""
    if zeros_when_extra and (sinks is not None or softcap is not None):
        return torch.zeros_like(q)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, L, S)
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    if sinks is not None:  # (H,) -> (B, H, L, 1): one more column, dropped after the softmax
        column = sinks[:, None, None].expand(scores.shape[:-1] + (1,))
        return torch.cat([scores, column], dim=-1).softmax(dim=-1)[..., :-1] @ v
    return scores.softmax(dim=-1) @ v


def test_the_flash_options_come_from_the_signature():
    assert set(tt.oracle.accepted_options(flash_style)) == {
        "causal", "window_size", "softcap", "key_padding_mask", "query_padding_mask"
    }  # fmt: skip
    assert "softcap" not in tt.oracle.accepted_options(F.scaled_dot_product_attention)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_flash_attentions_reference_semantics_pass(dtype):
    report = tt.assert_sdpa_matches(flash_style, dtype=dtype, max_examples=40)
    assert set(report.worst) == {"out", "dq", "dk", "dv"}
    kinds = [  # every option, each checked on its own example
        dict(mask="bottom_right", L=3, S=6),
        dict(mask="bottom_right", L=6, S=3),  # the first queries see no key: 0
        dict(window=(1, 2), L=5, S=4),
        dict(window=(-1, 1), mask="bottom_right", L=4, S=5),
        dict(softcap=0.5, padding="both", mask="bottom_right", window=(2, 0)),
        dict(padding="keys"),
        dict(padding="queries", mask="bottom_right"),
    ]
    for kind in kinds:
        ex = tt.SDPAExample(**{**BASE, **kind})
        assert tt.compare_sdpa(flash_style, ex, dtype=dtype) is None, ex


BASE = dict(batch=2, heads=2, kv_heads=2, L=4, S=5, E=3, mask="none", scale=None,
            dropout_p=0.0, seed=5)  # fmt: skip


@pytest.mark.parametrize(
    "bug, example",
    [
        ("top-left causal", dict(mask="bottom_right", L=2, S=4)),
        ("window ignored", dict(window=(1, 0))),
        ("softcap ignored", dict(softcap=0.5)),
        ("key padding ignored", dict(padding="keys")),
    ],
)
def test_flash_option_bugs_are_caught(bug, example):
    def buggy(q, k, v, causal=False, window_size=(-1, -1), softcap=0.0,
              key_padding_mask=None, query_padding_mask=None):  # fmt: skip
        if bug == "top-left causal" and causal:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if bug == "window ignored":
            window_size = (-1, -1)
        if bug == "softcap ignored":
            softcap = 0.0
        if bug == "key padding ignored":
            key_padding_mask = None
        return flash_style(q, k, v, causal, window_size, softcap, key_padding_mask,
                           query_padding_mask)  # fmt: skip

    with pytest.raises(tt.ReferenceMismatchError):
        tt.assert_sdpa_matches(buggy, max_examples=40)
    assert tt.compare_sdpa(buggy, tt.SDPAExample(**{**BASE, **example})) is not None


def test_softcap_and_sinks_are_drawn_and_their_zeros_caught():
    report = tt.assert_sdpa_matches(with_sinks, max_examples=20)
    assert "dsinks" in report.worst  # the sinks' gradient is compared
    bad = functools.partial(with_sinks, zeros_when_extra=True)
    with pytest.raises(tt.ReferenceMismatchError, match="softcap=|sinks=True"):
        tt.assert_sdpa_matches(bad, max_examples=20)


def varlen_style(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=False,
                 window_size=(-1, -1), softcap=0.0, bug=None):  # fmt: skip
    """FlashAttention's varlen API, as its tests check it: the packed sequences padded back
    to (B, L, H, E) with their padding masks, attention_ref, and the output packed again.
    bug="one sequence": the packed tokens attend across sequences (cu_seqlens ignored)."""
    if bug == "one sequence":
        out, _ = attention_ref(q[None], k[None], v[None], causal=causal,
                               window_size=window_size, softcap=softcap)  # fmt: skip
        return out[0]

    def padded(t, cu, n):  # (total, H, E) -> (B, n, H, E), and the mask (B, n)
        rows, masks = [], []
        for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
            rows.append(F.pad(t[a:b], (0, 0, 0, 0, 0, n - (b - a))))
            masks.append(torch.arange(n, device=t.device) < b - a)
        return torch.stack(rows), torch.stack(masks)

    qp, qm = padded(q, cu_seqlens_q, max_seqlen_q)
    kp, km = padded(k, cu_seqlens_k, max_seqlen_k)
    vp, _ = padded(v, cu_seqlens_k, max_seqlen_k)
    out, _ = attention_ref(qp, kp, vp, qm, km, causal, window_size, softcap)
    return out[qm]  # (B, L, H, E) -> (total_q, H, E)


def test_flash_varlen_semantics_pass_and_sequences_that_leak_are_caught():
    assert {"cu_seqlens_q", "cu_seqlens_k"} <= set(tt.oracle.accepted_options(varlen_style))
    report = tt.assert_sdpa_matches(varlen_style, max_examples=30)
    assert set(report.worst) == {"out", "dq", "dk", "dv"}
    ex = tt.SDPAExample(**{**BASE, "padding": "varlen", "mask": "bottom_right"})
    assert tt.compare_sdpa(varlen_style, ex) is None
    leaky = functools.partial(varlen_style, bug="one sequence")
    with pytest.raises(tt.ReferenceMismatchError, match="padding=varlen"):
        tt.assert_sdpa_matches(leaky, max_examples=30)
