"""The attention backward, number by number, on "Your journey starts with one step".

One causal head of the chapter's CausalAttention (its seeded weights, as in the demo) is run
forward in float64, then backwards by hand: dout -> dattn_weights -> dattn_scores ->
dq, dk, dv. Every gradient is printed beside its central-difference value, computed here.

Shapes: T = 6 tokens (queries and keys), E = d_out = 2; q, k, v, dout (T, E);
attn_scores, attn_weights (T, T). Symbols of docs/backward/sdpa.md: Q = q, K = k, V = v,
S = attn_scores (scaled, masked), P = attn_weights, O = context_vec, s = scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import functional as F
from ..gradcheck import numerical_gradient
from ..modules import CausalAttention
from .data import TOKENS, chapter_inputs
from .weights import chapter_module

D_OUT = 2  # the chapter's d_out: one head of width 2
DECIMALS = 4
WIDTH = 90  # widest line printed


@dataclass(frozen=True)
class GradStep:
    """One gradient of the walk: its name, formula, the hand-written value and the numeric one."""

    name: str  # "dq"
    formula: str  # "s * dattn_scores @ k"
    analytic: np.ndarray  # the backward's value
    numeric: np.ndarray  # central differences in float64, same shape


@dataclass(frozen=True)
class BackwardWalkthrough:
    """The forward values and the gradient steps, in backward order."""

    source: str  # "torch" (the chapter's weights) or "npattn" (npattn's seeded init)
    q: np.ndarray  # (T, E) = W_query(x)
    k: np.ndarray  # (T, E)
    v: np.ndarray  # (T, E)
    scale: float  # s = 1 / sqrt(E)
    mask: np.ndarray  # (T, T) boolean, True = attend
    attn_scores: np.ndarray  # (T, T) s * q @ k.T, -inf where masked
    attn_weights: np.ndarray  # (T, T) softmax of each row
    context_vec: np.ndarray  # (T, E) attn_weights @ v
    dout: np.ndarray  # (T, E) a seeded random upstream gradient
    D: np.ndarray  # (T, 1) rowsum(dout * context_vec)
    steps: tuple[GradStep, ...]  # dattn_weights, dv, dattn_scores, dq, dk


def _forward(q, k, v, mask, scale):
    """Steps 1 to 3 and 5 of docs/backward/sdpa.md (no dropout). -> (scores, weights, out)."""
    attn_scores = np.where(mask, scale * q @ k.T, -np.inf)  # 1, 2: (T, E) @ (E, T) -> (T, T)
    attn_weights = F.softmax(attn_scores)  # 3: each row sums to 1
    return attn_scores, attn_weights, attn_weights @ v  # 5: (T, T) @ (T, E) -> (T, E)


def _loss(dout):
    """L = sum(out * dout): its gradient with respect to out is dout."""
    return lambda out: float(np.sum(out * dout))


def backward_walkthrough(weights: str = "auto", seed: int = 0) -> BackwardWalkthrough:
    """Forward and backward of one causal head on the chapter's six tokens, with checks.

    weights as in npattn.chapter.weights.chapter_module; seed draws dout.
    """
    x = chapter_inputs(np.float64)  # (T, d_in)
    head, source = chapter_module(CausalAttention, x.shape[-1], D_OUT, len(x), 0.0, weights=weights)
    head = head.astype(np.float64)
    q, k, v = head.W_query(x), head.W_key(x), head.W_value(x)  # (T, d_in) -> (T, E) each
    T, E = q.shape
    scale = 1.0 / np.sqrt(E)
    mask = F.causal_mask(T)  # (T, T), True = attend
    attn_scores, attn_weights, out = _forward(q, k, v, mask, scale)
    dout = np.random.default_rng(seed).standard_normal(out.shape)  # random, never all ones
    loss = _loss(dout)

    # the backward, steps 5 to 1 (dropout, step 4, is off: p_drop = 0)
    dattn_weights = dout @ v.T  # 5: (T, E) @ (E, T) -> (T, T)
    dv = attn_weights.T @ dout  # 5: (T, T) @ (T, E) -> (T, E)
    D = np.sum(dout * out, axis=-1, keepdims=True)  # (T, 1) = rowsum(P * dP), see the docs
    dattn_scores = attn_weights * (dattn_weights - D)  # 3: softmax backward; 0 where masked
    dq = scale * dattn_scores @ k  # 1: (T, T) @ (T, E) -> (T, E)
    dk = scale * dattn_scores.T @ q  # 1: (T, T) @ (T, E) -> (T, E)

    # the same gradients by central differences: perturb one array, rerun what follows it
    P, S = attn_weights.copy(), scale * q @ k.T  # S before masking: masked entries get 0
    qn, kn, vn = q.copy(), k.copy(), v.copy()
    numeric = {
        "dattn_weights": numerical_gradient(lambda: loss(P @ v), P),
        "dv": numerical_gradient(lambda: loss(attn_weights @ vn), vn),
        "dattn_scores": numerical_gradient(
            lambda: loss(F.softmax(np.where(mask, S, -np.inf)) @ v), S
        ),
        "dq": numerical_gradient(lambda: loss(_forward(qn, k, v, mask, scale)[2]), qn),
        "dk": numerical_gradient(lambda: loss(_forward(q, kn, v, mask, scale)[2]), kn),
    }
    analytic = {
        "dattn_weights": (dattn_weights, "dout @ v.T"),
        "dv": (dv, "attn_weights.T @ dout"),
        "dattn_scores": (dattn_scores, "attn_weights * (dattn_weights - D)"),
        "dq": (dq, "scale * dattn_scores @ k"),
        "dk": (dk, "scale * dattn_scores.T @ q"),
    }
    steps = tuple(GradStep(n, f, a, numeric[n]) for n, (a, f) in analytic.items())
    return BackwardWalkthrough(
        source, q, k, v, scale, mask, attn_scores, attn_weights, out, dout, D, steps
    )


def _rows(a, decimals: int) -> list[str]:
    """Each row of a 2-d array as '[ 0.1234, -0.5678]', masked -inf shown as '-inf'."""
    return [
        "[" + ", ".join(f"{x: .{decimals}f}" if np.isfinite(x) else f"{'-inf':>{decimals + 3}}"
                        for x in row) + "]"
        for row in np.round(np.atleast_2d(a), decimals) + 0.0  # + 0.0: no "-0.0000"
    ]  # fmt: skip


def format_array(name: str, a, decimals: int = DECIMALS) -> str:
    """name (shape), then one row per token."""
    lines = [f"{name} {np.shape(a)}"]
    lines += [f"  {tok:<8}{row}" for tok, row in zip(TOKENS, _rows(a, decimals))]
    return "\n".join(lines)


def format_step(step: GradStep, decimals: int = DECIMALS) -> str:
    """A gradient beside its finite-difference value: on one line when it fits, else below."""
    head = f"{step.name} = {step.formula}  {step.analytic.shape}"
    err = float(np.abs(step.analytic - step.numeric).max())
    ours, theirs = _rows(step.analytic, decimals), _rows(step.numeric, decimals)
    side = len(ours[0]) * 2 + 16 <= WIDTH
    if side:
        lines = [head, f"  {'':<8}{'backward':<{len(ours[0]) + 4}}finite differences"]
    else:
        lines = [head + ", finite differences (fd) below"]
    for tok, a, n in zip(TOKENS, ours, theirs):
        lines += [f"  {tok:<8}{a}    {n}"] if side else [f"  {tok:<8}{a}", f"  {'fd':>7} {n}"]
    lines.append(f"  max |backward - finite differences| = {err:.1e}")
    return "\n".join(lines)


def format_walkthrough(result: BackwardWalkthrough, decimals: int = DECIMALS) -> str:
    """The whole walk as text: forward values, dout, then every step with its check."""
    parts = [
        format_array("attn_weights = softmax(attn_scores)", result.attn_weights, decimals),
        format_array("context_vec = attn_weights @ v", result.context_vec, decimals),
        format_array("dout (seeded random)", result.dout, decimals),
    ]
    parts += [format_step(s, decimals) for s in result.steps[:2]]
    parts.append(format_array("D = rowsum(dout * context_vec)", result.D, decimals))
    parts += [format_step(s, decimals) for s in result.steps[2:]]
    return "\n\n".join(parts)
