"""assert_sdpa_matches: property-test an SDPA-like function (your kernel) against npattn.

fn(q, k, v, **options) must compute torch.nn.functional.scaled_dot_product_attention's
function. The kit reads fn's signature and only passes the options it accepts: attn_mask
(boolean, True = attend, or float, added), is_causal (top-left aligned when L != S), scale,
enable_gqa (k, v with fewer heads, repeated as repeat_interleave does), and dropout through
an explicit boolean keep-mask `dropout_mask` with `dropout_p` (output (P * keep / (1-p)) V).
Beyond torch, with FlashAttention's names and meanings (its `attention_ref`):
softmax_scale (scale's other name), softcap (scores -> c tanh(scores / c), before any mask),
sinks (H,) (one logit per head in each row's softmax denominator, gpt-oss; its gradient
compared), causal (bottom-right aligned: query i sees key j <= i + S - L), window_size
(left, right) (key j visible from query i when i + S - L - left <= j <= i + S - L + right;
-1 on the left: no limit; with causal, right is 0), key_padding_mask and query_padding_mask
(B, S) and (B, L), True = a real token, right-padded: with them, S and L above are each
sequence's own lengths, and a padded query's output is 0; cu_seqlens_q and cu_seqlens_k
(with max_seqlen_q, max_seqlen_k: FlashAttention's varlen API) take the same sequences packed:
q (total_q, H, E), k and v (total_k, Hkv, E), the sequences one after another, and the
output packed like q.
A fully masked row must give 0 and no NaN. Truth: npattn's sdpa_forward / sdpa_backward in
float64 on the same (rounded) inputs; judged by the error model of precision.py, with a
plain eager torch formula at the same dtype and device as the yardstick.

Shapes: q (B, H, L, E), k and v (B, Hkv, S, E) -> out (B, H, L, E); masks (L, S).
"""

from __future__ import annotations

import dataclasses
import inspect
import unittest
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

from npattn.ops.sdpa import sdpa_backward, sdpa_forward

from . import engine
from .check import replay_line
from .engine import Report
from .errors import KitSetupError, Mismatch
from .precision import judge, rule_for
from .setup import call_setup_error, calling_error, check_device, check_sizes

OPTIONS = ("attn_mask", "is_causal", "scale", "enable_gqa", "dropout_mask")
TORCH_SDPA = ("attn_mask", "is_causal", "scale", "enable_gqa")  # F.sdpa has no dropout_mask
# drawn only when fn's signature names them (FlashAttention's and gpt-oss's names)
NAMED_OPTIONS = (
    "softmax_scale",
    "softcap",
    "sinks",
    "causal",
    "window_size",
    "key_padding_mask",
    "query_padding_mask",
    "cu_seqlens_q",
    "cu_seqlens_k",
)


@dataclass(frozen=True)
class SDPAExample:
    """One call: shapes, the kind of mask, scale and dropout; values from `seed`."""

    batch: int
    heads: int
    kv_heads: int
    L: int
    S: int
    E: int
    mask: str  # "none", "bool", "float" (L, S), "bool4d", "float4d" (B, H, L, S),
    # "causal" (top-left) or "bottom_right" (causal=)
    scale: float | None
    dropout_p: float
    seed: int
    softcap: float | None = None
    sinks: bool = False  # one logit per head, drawn from seed
    window: tuple | None = None  # (left, right) as window_size, -1 on the left: no limit
    padding: str = "none"  # "none", "keys", "queries", "both", or "varlen" (both, packed)
    strided: bool = False  # q, k, v passed as non-contiguous views (B, L, H, E).transpose(1, 2)

    def __str__(self) -> str:
        extra = "".join(
            f", {k}={getattr(self, k)}"
            for k, off in (
                ("softcap", None),
                ("sinks", False),
                ("window", None),
                ("padding", "none"),
                ("strided", False),
            )
            if getattr(self, k) != off
        )
        return (
            f"q ({self.batch}, {self.heads}, {self.L}, {self.E}), k and v ({self.batch}, "
            f"{self.kv_heads}, {self.S}, {self.E}), mask={self.mask}, scale={self.scale}, "
            f"dropout_p={self.dropout_p}{extra}, seed {self.seed}"
        )


def accepted_options(fn) -> tuple:
    """The options of OPTIONS that fn's signature accepts (torch's SDPA: all but dropout_mask)."""
    if fn is torch.nn.functional.scaled_dot_product_attention:
        return TORCH_SDPA
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return TORCH_SDPA
    named = tuple(o for o in NAMED_OPTIONS if o in params)
    accepted = tuple(o for o in OPTIONS if o in params)
    if "dropout_mask" in accepted and "dropout_p" not in params:
        accepted = tuple(o for o in accepted if o != "dropout_mask")
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        # **kwargs gets torch's options only; the kit's own (dropout_mask) only by name
        accepted = tuple(o for o in OPTIONS if o in TORCH_SDPA or o in accepted)
    return accepted + named


FLASH_NAMES = ("softmax_scale", "causal", "window_size")


def takes_gqa(accepted) -> bool:
    """Whether fn gets k and v with fewer heads than q: torch's enable_gqa, or FlashAttention's
    convention (no flag: k and v simply have Hkv heads), recognised by its option names."""
    return "enable_gqa" in accepted or any(n in accepted for n in FLASH_NAMES)


def draw_tensors(ex: SDPAExample, dtype):
    """q, k, v, the mask, the keep-mask and the upstream gradient, rounded to dtype (float64)."""
    rng = np.random.default_rng(ex.seed)

    def rounded(a):
        return torch.from_numpy(a).to(dtype).to(torch.float64).numpy()

    q = rounded(rng.standard_normal((ex.batch, ex.heads, ex.L, ex.E)))
    k = rounded(rng.standard_normal((ex.batch, ex.kv_heads, ex.S, ex.E)))
    v = rounded(rng.standard_normal((ex.batch, ex.kv_heads, ex.S, ex.E)))
    attend = rng.random((ex.L, ex.S)) < 0.7  # (L, S), True = attend
    attend[rng.random(ex.L) < 0.25] = False  # some rows fully masked
    mask = None
    if ex.mask == "bool":
        mask = attend
    elif ex.mask == "float":
        mask = np.where(attend, rounded(rng.standard_normal((ex.L, ex.S))), -np.inf)
    if ex.mask in ("bool4d", "float4d"):  # one mask per batch row and head, its own stream
        rng4, shape = np.random.default_rng([ex.seed, 2]), (ex.batch, ex.heads, ex.L, ex.S)
        attend = rng4.random(shape) < 0.7  # (B, H, L, S)
        attend[rng4.random(shape[:-1]) < 0.25] = False
        mask = attend
        if ex.mask == "float4d":
            mask = np.where(attend, rounded(rng4.standard_normal(shape)), -np.inf)
    keep = None
    if ex.dropout_p > 0:
        keep = rng.random((ex.batch, ex.heads, ex.L, ex.S)) >= ex.dropout_p
    g = rounded(rng.standard_normal((ex.batch, ex.heads, ex.L, ex.E)))
    return q, k, v, mask, keep, g


def draw_extras(ex: SDPAExample, dtype):
    """The sinks (H,) and the padding masks (B, S), (B, L) of an example (None when off):
    right padding, at least one real key per sequence."""
    rng = np.random.default_rng([ex.seed, 1])  # apart from draw_tensors' stream
    sinks = None
    if ex.sinks:
        sinks = torch.from_numpy(rng.standard_normal(ex.heads)).to(dtype).double().numpy()
    kpm = qpm = None
    if ex.padding in ("keys", "both", "varlen"):
        lengths = rng.integers(1, ex.S + 1, ex.batch)  # (B,)
        kpm = np.arange(ex.S)[None, :] < lengths[:, None]  # (B, S), True = real
    if ex.padding in ("queries", "both", "varlen"):
        lengths = rng.integers(1, ex.L + 1, ex.batch)
        qpm = np.arange(ex.L)[None, :] < lengths[:, None]  # (B, L)
    return sinks, kpm, qpm


def attend_mask(ex: SDPAExample, mask, kpm, qpm):
    """Everything but attn_mask's values as one boolean (B, 1, L, S) mask, True = attend,
    with attn_mask's -inf / False folded in: FlashAttention's local mask, right-aligned on
    each sequence's own lengths, its padding, and torch's top-left is_causal. None: no mask."""
    B, L, S = ex.batch, ex.L, ex.S
    attend = np.ones((B, 1, L, S), dtype=bool)
    i, j = np.arange(L)[:, None], np.arange(S)[None, :]  # (L, 1), (1, S)
    if mask is not None:
        attend = attend & (mask.astype(bool) if mask.dtype == bool else mask > -np.inf)
    if ex.mask == "causal":
        attend &= j <= i
    sk = kpm.sum(-1) if kpm is not None else np.full(B, S)  # (B,) real keys
    sq = qpm.sum(-1) if qpm is not None else np.full(B, L)  # (B,) real queries
    shift = (sk - sq)[:, None, None, None]  # (B, 1, 1, 1): bottom-right alignment
    left, right = ex.window if ex.window is not None else (-1, -1)
    if ex.mask == "bottom_right":
        right = 0
    if ex.window is not None or ex.mask == "bottom_right":
        if left < 0:
            attend &= ~(j > i + shift + right)
        else:
            attend &= ~((j > np.minimum(i + shift + right, sk[:, None, None, None]))
                        | (j < i + shift - left))  # fmt: skip
    if kpm is not None:
        attend &= kpm[:, None, None, :]
    if qpm is not None:
        attend &= qpm[:, None, :, None]  # a padded query attends nothing: output 0
    return attend


def plain_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
               enable_gqa=False, dropout_mask=None, softcap=None, sinks=None):  # fmt: skip
    """The textbook formula in eager torch ops, at the inputs' dtype: the yardstick.

    Shapes: q (..., H, L, E), k, v (..., Hkv, S, E) -> (..., H, L, E). Fully masked rows: 0.
    softcap caps the scores before the mask; sinks (H,) joins each row's denominator.
    """
    if enable_gqa:
        group = q.shape[-3] // k.shape[-3]
        k = k.repeat_interleave(group, dim=-3)  # (..., H, S, E)
        v = v.repeat_interleave(group, dim=-3)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q * scale) @ k.transpose(-2, -1)  # (..., L, S)
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    L, S = scores.shape[-2:]
    if is_causal:
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attn_mask, -torch.inf)
    elif attn_mask is not None:
        scores = scores + attn_mask
    dead = (scores == -torch.inf).all(dim=-1, keepdim=True)  # fully masked rows
    if sinks is not None:  # one more logit per row: (..., L, S + 1), then dropped
        sink = sinks.view(-1, 1, 1).expand(scores.shape[:-1] + (1,))
        weights = torch.cat([scores.masked_fill(dead, -torch.inf), sink], -1).softmax(-1)
        weights = weights[..., :-1]
    else:
        weights = scores.masked_fill(dead, 0.0).softmax(dim=-1).masked_fill(dead, 0.0)
    if dropout_mask is not None:
        weights = weights * dropout_mask / (1 - dropout_p)
    return weights @ v


def varlen_only(fn) -> bool:
    """Whether fn requires cu_seqlens_q (no default): a varlen kernel, always called packed."""
    try:
        p = inspect.signature(fn).parameters.get("cu_seqlens_q")
    except (TypeError, ValueError):
        return False
    return p is not None and p.default is p.empty


def _examples(accepted, max_batch, max_heads, max_tokens, max_head_dim, packed=False):
    masks = ["none"] + [m for m, o in (("bool", "attn_mask"), ("float", "attn_mask"),
                                       ("bool4d", "attn_mask"), ("float4d", "attn_mask"),
                                       ("causal", "is_causal"), ("bottom_right", "causal"))
                        if o in accepted]  # fmt: skip
    paddings = ["none"]
    if "key_padding_mask" in accepted:
        paddings.append("keys")
    if "query_padding_mask" in accepted:
        paddings.append("queries")
    if len(paddings) == 3:
        paddings.append("both")
    if "cu_seqlens_q" in accepted and "cu_seqlens_k" in accepted:
        paddings = ["varlen"] if packed else [*paddings, "varlen"]
    scaled = "scale" in accepted or "softmax_scale" in accepted

    # (heads, kv_heads): GQA with at least two key heads and groups, where repeat and
    # repeat_interleave order the heads differently
    pairs = [(h, h) for h in range(1, max_heads + 1)]
    if takes_gqa(accepted):
        pairs += [(h, kv) for h in range(2, max_heads + 1) for kv in range(1, h) if h % kv == 0]

    @st.composite
    def draw(draw):
        heads, kv_heads = draw(st.sampled_from(pairs))
        L, S = draw(st.integers(1, max_tokens)), draw(st.integers(1, max_tokens))
        mask = draw(st.sampled_from(masks))
        window = None
        if "window_size" in accepted and mask != "causal" and draw(st.booleans()):
            # -1 on the left only: FlashAttention's reference reads -1 on the right as -1
            window = (draw(st.integers(-1, S)), draw(st.integers(0, S)))
        return SDPAExample(
            batch=draw(st.integers(1, max_batch)),
            heads=heads,
            kv_heads=kv_heads,
            L=L,
            S=S,
            E=draw(st.integers(1, max_head_dim)),
            mask=mask,
            scale=draw(st.none() | st.sampled_from([0.1, 0.5, 2.0])) if scaled else None,
            dropout_p=draw(st.sampled_from([0.0, 0.4])) if "dropout_mask" in accepted else 0.0,
            seed=draw(st.integers(0, 2**32 - 1)),
            softcap=draw(st.none() | st.sampled_from([0.5, 2.0]))
            if "softcap" in accepted
            else None,
            sinks=draw(st.booleans()) if "sinks" in accepted else False,
            window=window,
            padding=draw(st.sampled_from(paddings)),
            strided=False if packed else draw(st.booleans()),
        )

    return draw()


def _call_options(ex: SDPAExample, mask, keep, extras, to, accepted) -> dict:
    """fn's keyword arguments for this example; only those that differ from the defaults."""
    sinks, kpm, qpm = extras
    options = {}
    if mask is not None:
        options["attn_mask"] = to(mask)
    if ex.mask == "causal":
        options["is_causal"] = True
    if ex.mask == "bottom_right":
        options["causal"] = True
    if ex.scale is not None:
        options["scale" if "scale" in accepted else "softmax_scale"] = ex.scale
    if ex.heads != ex.kv_heads and "enable_gqa" in accepted:
        options["enable_gqa"] = True
    if ex.dropout_p > 0:
        options["dropout_p"], options["dropout_mask"] = ex.dropout_p, to(keep)
    if ex.softcap is not None:
        options["softcap"] = ex.softcap
    if sinks is not None:
        options["sinks"] = sinks
    if ex.window is not None:
        options["window_size"] = ex.window
    if ex.padding == "varlen":  # the lengths as cumulative offsets, int32 as flash-attn's
        for side, pm in (("q", qpm), ("k", kpm)):
            lengths = torch.as_tensor(pm.sum(-1), dtype=torch.int32)
            cu = torch.cat([torch.zeros(1, dtype=torch.int32), lengths.cumsum(0).int()])
            options[f"cu_seqlens_{side}"] = cu.to(to(pm).device)
            options[f"max_seqlen_{side}"] = int(lengths.max())
        return options
    if kpm is not None:
        options["key_padding_mask"] = to(kpm)
    if qpm is not None:
        options["query_padding_mask"] = to(qpm)
    return options


def pack(t, lengths):
    """(B, H, N, E) -> (sum(lengths), H, E): each row's first lengths[b] tokens, in order."""
    return torch.cat([t[b, :, : int(n)].transpose(0, 1) for b, n in enumerate(lengths)])


def unpack(t, lengths, N: int):
    """(sum(lengths), H, E) -> (B, H, N, E), zeros past each row's length."""
    rows, start = [], 0
    for n in (int(n) for n in lengths):
        row = t[start : start + n].transpose(0, 1)  # (H, n, E)
        rows.append(torch.nn.functional.pad(row, (0, 0, 0, N - n)))
        start += n
    return torch.stack(rows)


def _truth_mask(ex: SDPAExample, mask, kpm, qpm):
    """attn_mask for npattn's sdpa_forward and the plain formula: the example's masks as one
    (B, 1, L, S) boolean, or float with -inf where masked; None when nothing is masked."""
    folded = ex.mask in ("causal", "bottom_right") or ex.window is not None
    if not folded and kpm is None and qpm is None:
        return mask
    attend = attend_mask(ex, mask, kpm, qpm)
    if mask is not None and mask.dtype != bool:
        return np.where(attend, mask, -np.inf)
    return attend


def run_sdpa_example(fn, ex: SDPAExample, dtype, device, rule, check_backward, accepted=None):
    accepted = accepted_options(fn) if accepted is None else accepted
    q64, k64, v64, mask, keep, g64 = draw_tensors(ex, dtype)
    sinks64, kpm, qpm = draw_extras(ex, dtype)
    truth_mask = _truth_mask(ex, mask, kpm, qpm)
    out_ref, cache = sdpa_forward(
        q64, k64, v64, attn_mask=truth_mask, dropout_p=ex.dropout_p, scale=ex.scale,
        enable_gqa=ex.heads != ex.kv_heads, dropout_mask=keep, softcap=ex.softcap,
        sinks=sinks64,
    )  # fmt: skip
    if not np.isfinite(out_ref).all():
        raise KitSetupError(f"npattn's sdpa gave a non-finite output on {ex}: a kit bug")
    truth = {"out": out_ref}
    names = ("dq", "dk", "dv") + (("dsinks",) if sinks64 is not None else ())
    if check_backward:
        truth.update(zip(names, sdpa_backward(g64, cache)))

    def to(a):
        t = torch.from_numpy(np.asarray(a)).to(device)
        return t if t.dtype == torch.bool else t.to(dtype)

    results = {}
    for name, f in (("fn", fn), ("plain", plain_sdpa)):
        if name == "plain" and not rule.needs_plain:
            continue
        q, k, v = (to(a).requires_grad_(check_backward) for a in (q64, k64, v64))
        inputs = [q, k, v]
        sinks = None
        if sinks64 is not None:
            sinks = to(sinks64).requires_grad_(check_backward)
            inputs.append(sinks)
        if name == "fn":
            options = _call_options(ex, mask, keep, (sinks, kpm, qpm), to, accepted)
        else:
            options = dict(
                attn_mask=None if truth_mask is None else to(truth_mask), scale=ex.scale,
                enable_gqa=ex.heads != ex.kv_heads, softcap=ex.softcap, sinks=sinks,
            )  # fmt: skip
            if ex.dropout_p > 0:
                options.update(dropout_p=ex.dropout_p, dropout_mask=to(keep))
        varlen = name == "fn" and ex.padding == "varlen"
        try:
            with torch.set_grad_enabled(check_backward):
                if varlen:  # packed in, packed out: unpacked to (B, H, L, E), 0 on padding
                    lq, lk = qpm.sum(-1), kpm.sum(-1)
                    out = f(pack(q, lq), pack(k, lk), pack(v, lk), **options)
                    if torch.is_tensor(out):
                        out = unpack(out, lq, ex.L)
                elif name == "fn" and ex.strided:  # the same values, (B, L, H, E) in memory
                    out = f(*(t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v)),
                            **options)  # fmt: skip
                else:
                    out = f(q, k, v, **options)
            if not torch.is_tensor(out):
                raise KitSetupError(f"fn must return a tensor, got {type(out).__name__}")
            got = {"out": out}
            if check_backward:
                grads = torch.autograd.grad(
                    out, inputs, to(g64), allow_unused=True, materialize_grads=True
                )
                got.update(zip(names, grads))
        except KitSetupError:
            raise
        except Exception as e:
            if name == "plain":
                raise
            if calling_error(e, run_sdpa_example):
                raise call_setup_error(
                    e,
                    getattr(fn, "__name__", type(fn).__name__),
                    f"the kit calls fn(q, k, v, **options) with options among "
                    f"{sorted(accepted)}; give the other parameters defaults",
                ) from e
            detail = f"{type(e).__name__}: {e}"
            return [], Mismatch("exception", ex, (), float("inf"), detail)
        results[name] = {k: t.detach().to("cpu", torch.float64).numpy() for k, t in got.items()}
    norms = {k: float(np.linalg.norm(t)) for k, t in truth.items()}
    grads_rms = np.sqrt(
        sum(norms[k] ** 2 for k in ("dq", "dk", "dv") if k in norms)
        / max(1, sum(truth[k].size for k in ("dq", "dk", "dv") if k in truth))
    )
    judgements = []
    for key, t in truth.items():
        scale = norms[key] if key == "out" else max(norms[key], grads_rms * np.sqrt(t.size))
        plain = results["plain"][key] if "plain" in results else None
        j, found = judge(key, results["fn"][key], t, plain, rule, ex, scale)
        judgements.append(j)
        if found:
            return judgements, found
    return judgements, None


def compare_sdpa(fn, example: SDPAExample, *, dtype=torch.float64, device="cpu",
                 check_backward=True, rtol=None, atol=None, factor=None, floor=None):  # fmt: skip
    """One SDPAExample: the first disagreement (out, dq, dk, dv) as a Mismatch, or None."""
    rule = rule_for(dtype, factor=factor, floor=floor, rtol=rtol, atol=atol)
    return run_sdpa_example(fn, example, dtype, _device(device), rule, check_backward)[1]


def _device(device):
    device = check_device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise unittest.SkipTest("device='cuda' but torch.cuda.is_available() is False")
    return device


def assert_sdpa_matches(
    fn,
    *,
    dtype=torch.float64,
    device="cpu",
    check_backward: bool = True,
    max_examples: int = 50,
    seed: int = 0,
    max_batch: int = 2,
    max_heads: int = 4,
    max_tokens: int | None = None,
    max_head_dim: int | None = None,
    rtol=None,
    atol=None,
    factor=None,
    floor=None,
) -> Report:
    """Raise ReferenceMismatchError unless fn agrees with npattn's float64 SDPA everywhere.

    Draws shapes (L != S, GQA), masks (boolean, float, causal, fully masked rows), scale
    and dropout (keep-mask), and FlashAttention's and gpt-oss's options (softcap, sinks,
    bottom-right causal, window_size, key and query padding), as far as fn's signature
    accepts them; compares out and, with check_backward, dq, dk, dv (and dsinks) for a
    random upstream gradient. device="cuda" without CUDA
    raises unittest.SkipTest (a skip under pytest). Returns a Report.

    L and S are drawn from 1 .. max_tokens (default 6) and E from 1 .. max_head_dim
    (default 8); a few explicit examples go further, past common block sizes (S = 9, 17,
    33, 65, E up to 64, each capped by max_tokens and max_head_dim when given), and, when fn
    takes GQA, heads=4 with kv_heads=2, where repeat and repeat_interleave differ.
    """
    if not callable(fn) or isinstance(fn, torch.nn.Module):
        raise KitSetupError(
            f"fn must be an SDPA-like function fn(q, k, v, ...); got {type(fn).__name__} "
            f"(for a module use assert_matches_reference)"
        )
    __tracebackhide__ = True
    rule = rule_for(dtype, factor=factor, floor=floor, rtol=rtol, atol=atol)
    case = SDPACase(fn, dtype, _device(device), rule, check_backward)
    check_sizes(max_batch=max_batch, max_heads=max_heads, max_tokens=max_tokens,
                max_head_dim=max_head_dim, max_examples=max_examples, seed=seed)  # fmt: skip
    case.sizes = (max_batch, max_heads, max_tokens or 6, max_head_dim or 8)
    case.caps = (max_heads, max_tokens or 65, max_head_dim or 64)
    case.seed = seed
    case.report.max_tokens = max([case.sizes[2]] + [ex.S for ex in case.ladder()])
    case.kwargs = dict(dtype=dtype, check_backward=check_backward, rtol=rtol, atol=atol,
                       factor=factor, floor=floor)  # fmt: skip
    return engine.check(case, engine.Search(max_examples=max_examples, seed=seed))


class SDPACase(engine.Case):
    """assert_sdpa_matches's case: SDPAExamples, one call of fn each."""

    def __init__(self, fn, dtype, device, rule, check_backward):
        self.fn, self.dtype, self.device, self.rule = fn, dtype, device, rule
        self.check_backward = check_backward
        self.accepted = accepted_options(fn)
        self.report = Report()

    def examples(self):
        return _examples(self.accepted, *self.sizes, packed=varlen_only(self.fn))

    def ladder(self):
        """Explicit examples, smallest first: GQA heads in an order repeat and
        repeat_interleave tell apart, then key lengths past common block sizes."""
        max_heads, max_tokens, max_head_dim = self.caps
        a = self.accepted
        varlen = "varlen" if varlen_only(self.fn) else "none"
        heads = (4, 2) if takes_gqa(a) and max_heads >= 4 else (min(2, max_heads),) * 2
        causal = "causal" if "is_causal" in a else "bottom_right" if "causal" in a else "none"
        rungs = []
        if takes_gqa(a) and max_heads >= 4:
            for mask in ("none", causal):
                L, E = min(3, max_tokens), min(2, max_head_dim)
                rungs.append(SDPAExample(1, 4, 2, L, L, E, mask, None, 0.0, self.seed,
                                         padding=varlen))  # fmt: skip
        if varlen == "none":  # non-contiguous views, a mask per batch row and head
            mask = "bool4d" if "attn_mask" in a else "none"
            L, S, E = min(5, max_tokens), min(7, max_tokens), min(4, max_head_dim)
            B = min(2, self.sizes[0])  # two rows: a view that merges B and H then fails
            rungs.append(SDPAExample(B, *heads, L, S, E, mask, None, 0.0, self.seed,
                                     strided=True))  # fmt: skip
        for S, L, E, mask in ((9, 9, 16, "none"), (17, 7, 32, "none"), (33, 33, 64, causal),
                              (65, 65, 64, "none")):  # fmt: skip
            S, L, E = min(S, max_tokens), min(L, max_tokens), min(E, max_head_dim)
            ex = SDPAExample(1, *heads, L, S, E, mask, None, 0.0, self.seed, padding=varlen)
            if ex not in rungs:
                rungs.append(ex)
        return rungs

    def between(self, passed, failed):
        """The failing example at the key lengths between the last passing one and it."""
        low = passed.S if passed is not None else 0
        return [
            dataclasses.replace(failed, L=min(failed.L, s), S=s) for s in range(low + 1, failed.S)
        ]

    def run(self, example):
        return run_sdpa_example(
            self.fn, example, self.dtype, self.device, self.rule, self.check_backward,
            self.accepted,
        )  # fmt: skip

    def message(self, mismatch):
        dtype, device = self.dtype, self.device
        line = replay_line(mismatch.example, "compare_sdpa", {}, self.kwargs)
        line = line.replace("(module, reference, ", "(fn, ").replace(", )", ")")
        line = line.replace(f"dtype={dtype}", f"dtype={dtype}, device={str(device)!r}")
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        return (
            f"{name} does not match npattn's sdpa ({str(dtype).replace('torch.', '')}, "
            f"{device}): {mismatch}\nreplay: {line}"
        )
