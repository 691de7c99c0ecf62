"""assert_sdpa_matches: property-test an SDPA-like function (your kernel) against npattn.

fn(q, k, v, **options) must compute torch.nn.functional.scaled_dot_product_attention's
function. The kit reads fn's signature and only passes the options it accepts: attn_mask
(boolean, True = attend, or float, added), is_causal (top-left aligned when L != S), scale,
enable_gqa (k, v with fewer heads, repeated as repeat_interleave does), and dropout through
an explicit boolean keep-mask `dropout_mask` with `dropout_p` (output (P * keep / (1-p)) V).
A fully masked row must give 0 and no NaN. Truth: npattn's sdpa_forward / sdpa_backward in
float64 on the same (rounded) inputs; judged by the error model of precision.py, with a
plain eager torch formula at the same dtype and device as the yardstick.

Shapes: q (B, H, L, E), k and v (B, Hkv, S, E) -> out (B, H, L, E); masks (L, S).
"""

from __future__ import annotations

import inspect
import unittest
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

from npattn.ops.sdpa import sdpa_backward, sdpa_forward

from .check import Report, find_smallest, replay_line
from .errors import KitSetupError, Mismatch, ReferenceMismatchError
from .precision import judge, rule_for

OPTIONS = ("attn_mask", "is_causal", "scale", "enable_gqa", "dropout_mask")
TORCH_SDPA = ("attn_mask", "is_causal", "scale", "enable_gqa")  # F.sdpa has no dropout_mask


@dataclass(frozen=True)
class SDPAExample:
    """One call: shapes, the kind of mask, scale and dropout; values from `seed`."""

    batch: int
    heads: int
    kv_heads: int
    L: int
    S: int
    E: int
    mask: str  # "none", "bool", "float" or "causal"
    scale: float | None
    dropout_p: float
    seed: int

    def __str__(self) -> str:
        return (
            f"q ({self.batch}, {self.heads}, {self.L}, {self.E}), k and v ({self.batch}, "
            f"{self.kv_heads}, {self.S}, {self.E}), mask={self.mask}, scale={self.scale}, "
            f"dropout_p={self.dropout_p}, seed {self.seed}"
        )


def accepted_options(fn) -> tuple:
    """The options of OPTIONS that fn's signature accepts (torch's SDPA: all but dropout_mask)."""
    if fn is torch.nn.functional.scaled_dot_product_attention:
        return TORCH_SDPA
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return TORCH_SDPA
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return OPTIONS
    accepted = tuple(o for o in OPTIONS if o in params)
    if "dropout_mask" in accepted and "dropout_p" not in params:
        accepted = tuple(o for o in accepted if o != "dropout_mask")
    return accepted


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
    keep = None
    if ex.dropout_p > 0:
        keep = rng.random((ex.batch, ex.heads, ex.L, ex.S)) >= ex.dropout_p
    g = rounded(rng.standard_normal((ex.batch, ex.heads, ex.L, ex.E)))
    return q, k, v, mask, keep, g


def plain_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
               enable_gqa=False, dropout_mask=None):  # fmt: skip
    """The textbook formula in eager torch ops, at the inputs' dtype: the yardstick.

    Shapes: q (..., H, L, E), k, v (..., Hkv, S, E) -> (..., H, L, E). Fully masked rows: 0.
    """
    if enable_gqa:
        group = q.shape[-3] // k.shape[-3]
        k = k.repeat_interleave(group, dim=-3)  # (..., H, S, E)
        v = v.repeat_interleave(group, dim=-3)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q * scale) @ k.transpose(-2, -1)  # (..., L, S)
    L, S = scores.shape[-2:]
    if is_causal:
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attn_mask, -torch.inf)
    elif attn_mask is not None:
        scores = scores + attn_mask
    dead = (scores == -torch.inf).all(dim=-1, keepdim=True)  # fully masked rows
    weights = scores.masked_fill(dead, 0.0).softmax(dim=-1).masked_fill(dead, 0.0)
    if dropout_mask is not None:
        weights = weights * dropout_mask / (1 - dropout_p)
    return weights @ v


def _examples(accepted, max_batch, max_heads, max_tokens, max_head_dim):
    masks = ["none"] + [m for m, o in (("bool", "attn_mask"), ("float", "attn_mask"),
                                       ("causal", "is_causal")) if o in accepted]  # fmt: skip

    # (heads, kv_heads): GQA with at least two key heads and groups, where repeat and
    # repeat_interleave order the heads differently
    pairs = [(h, h) for h in range(1, max_heads + 1)]
    if "enable_gqa" in accepted:
        pairs += [(h, kv) for h in range(2, max_heads + 1) for kv in range(1, h) if h % kv == 0]

    @st.composite
    def draw(draw):
        heads, kv_heads = draw(st.sampled_from(pairs))
        return SDPAExample(
            batch=draw(st.integers(1, max_batch)),
            heads=heads,
            kv_heads=kv_heads,
            L=draw(st.integers(1, max_tokens)),
            S=draw(st.integers(1, max_tokens)),
            E=draw(st.integers(1, max_head_dim)),
            mask=draw(st.sampled_from(masks)),
            scale=draw(st.none() | st.sampled_from([0.1, 0.5, 2.0]))
            if "scale" in accepted
            else None,
            dropout_p=draw(st.sampled_from([0.0, 0.4])) if "dropout_mask" in accepted else 0.0,
            seed=draw(st.integers(0, 2**32 - 1)),
        )

    return draw()


def _call_options(ex: SDPAExample, mask, keep, to) -> dict:
    """fn's keyword arguments for this example; only those that differ from the defaults."""
    options = {}
    if mask is not None:
        options["attn_mask"] = to(mask)
    if ex.mask == "causal":
        options["is_causal"] = True
    if ex.scale is not None:
        options["scale"] = ex.scale
    if ex.heads != ex.kv_heads:
        options["enable_gqa"] = True
    if ex.dropout_p > 0:
        options["dropout_p"], options["dropout_mask"] = ex.dropout_p, to(keep)
    return options


def run_sdpa_example(fn, ex: SDPAExample, dtype, device, rule, check_backward):
    q64, k64, v64, mask, keep, g64 = draw_tensors(ex, dtype)
    out_ref, cache = sdpa_forward(
        q64, k64, v64, attn_mask=mask, dropout_p=ex.dropout_p, is_causal=ex.mask == "causal",
        scale=ex.scale, enable_gqa=ex.heads != ex.kv_heads, dropout_mask=keep,
    )  # fmt: skip
    truth = {"out": out_ref}
    if check_backward:
        truth["dq"], truth["dk"], truth["dv"] = sdpa_backward(g64, cache)

    def to(a):
        t = torch.from_numpy(np.asarray(a)).to(device)
        return t if t.dtype == torch.bool else t.to(dtype)

    results = {}
    for name, f in (("fn", fn), ("plain", plain_sdpa)):
        if name == "plain" and not rule.needs_plain:
            continue
        q, k, v = (to(a).requires_grad_(check_backward) for a in (q64, k64, v64))
        try:
            with torch.set_grad_enabled(check_backward):
                out = f(q, k, v, **_call_options(ex, mask, keep, to))
            if not torch.is_tensor(out):
                raise KitSetupError(f"fn must return a tensor, got {type(out).__name__}")
            got = {"out": out}
            if check_backward:
                dq, dk, dv = torch.autograd.grad(
                    out, (q, k, v), to(g64), allow_unused=True, materialize_grads=True
                )
                got.update(dq=dq, dk=dk, dv=dv)
        except KitSetupError:
            raise
        except Exception as e:
            if name == "plain":
                raise
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
    device = torch.device(device)
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
    max_tokens: int = 6,
    max_head_dim: int = 8,
    rtol=None,
    atol=None,
    factor=None,
    floor=None,
) -> Report:
    """Raise ReferenceMismatchError unless fn agrees with npattn's float64 SDPA everywhere.

    Draws shapes (L != S, GQA), masks (boolean, float, causal, fully masked rows), scale
    and dropout (keep-mask), as far as fn's signature accepts them; compares out and, with
    check_backward, dq, dk, dv for a random upstream gradient. device="cuda" without CUDA
    raises unittest.SkipTest (a skip under pytest). Returns a Report.
    """
    if not callable(fn) or isinstance(fn, torch.nn.Module):
        raise KitSetupError(
            f"fn must be an SDPA-like function fn(q, k, v, ...); got {type(fn).__name__} "
            f"(for a module use assert_matches_reference)"
        )
    rule = rule_for(dtype, factor=factor, floor=floor, rtol=rtol, atol=atol)
    device = _device(device)
    accepted = accepted_options(fn)
    examples = _examples(accepted, max_batch, max_heads, max_tokens, max_head_dim)
    report = Report()

    def disagrees(ex) -> bool:
        judgements, found = run_sdpa_example(fn, ex, dtype, device, rule, check_backward)
        report.examples += 1
        if found is None:
            report.note(judgements)
        return found is not None

    example = find_smallest(examples, disagrees, max_examples, seed)
    if example is None:
        return report
    mismatch = run_sdpa_example(fn, example, dtype, device, rule, check_backward)[1]
    kwargs = dict(dtype=dtype, check_backward=check_backward, rtol=rtol, atol=atol,
                  factor=factor, floor=floor)  # fmt: skip
    line = replay_line(example, "compare_sdpa", {}, kwargs)
    line = line.replace("(module, reference, ", "(fn, ").replace(", )", ")")
    line = line.replace(f"dtype={dtype}", f"dtype={dtype}, device={str(device)!r}")
    name = getattr(fn, "__name__", type(fn).__name__)
    message = (
        f"{name} does not match npattn's sdpa ({str(dtype).replace('torch.', '')}, "
        f"{device}): {mismatch}\nreplay: {line}"
    )
    raise ReferenceMismatchError(message, mismatch)
