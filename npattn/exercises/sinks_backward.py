"""Exercise: the backward of a softmax with an attention sink per head (gpt-oss)."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def sinks_backward(attn_scores, sinks, dattn_weights):
    """Backward of attn_weights = softmax([attn_scores, sink])[..., :S]: each head's sink logit
    joins every row's denominator, and its column is dropped.

    Shapes: attn_scores (B, H, L, S) (masked entries -inf, a row may be all -inf),
    sinks (H,), dattn_weights (B, H, L, S) -> dattn_scores (B, H, L, S), dsinks (H,).
    """
    raise NotImplementedError("write the sink softmax backward")
'''

HINTS = (
    "Recompute the forward: m = max(rowmax(scores), sink), e = exp(scores - m), "
    "e_sink = exp(sink - m), denom = rowsum(e) + e_sink, weights = e / denom, "
    "p_sink = e_sink / denom.",
    "It is a softmax over S + 1 columns whose last column has zero upstream gradient: "
    "dattn_scores = weights * (dattn_weights - dot) with dot = rowsum(dattn_weights * weights).",
    "The sink's own gradient in each row is p_sink * (0 - dot); one sink serves every row "
    "and batch of its head, so sum over B, L.",
)


def sinks_backward(attn_scores, sinks, dattn_weights):
    sink = sinks[:, None, None]  # (H, 1, 1)
    m = np.maximum(attn_scores.max(axis=-1, keepdims=True), sink)  # (B, H, L, 1), finite
    e = np.exp(attn_scores - m)
    e_sink = np.exp(sink - m)
    denom = e.sum(axis=-1, keepdims=True) + e_sink
    w, p_sink = e / denom, e_sink / denom
    dot = np.sum(dattn_weights * w, axis=-1, keepdims=True)  # (B, H, L, 1)
    dattn_scores = w * (dattn_weights - dot)
    dsinks = (-p_sink * dot).sum(axis=(0, 2, 3))  # (H,)
    return dattn_scores, dsinks


def reference(attn_scores, sinks, dattn_weights):
    _, cache = F.softmax_with_sink_forward(attn_scores, sinks)
    return F.softmax_with_sink_backward(dattn_weights, cache)


def make_inputs(p, rng):
    shape = (p["B"], p["H"], p["L"], p["S"])
    scores = rng.standard_normal(shape) * (20.0 if p["big"] else 1.0)
    if p["masked_row"]:
        scores[0, 0, 0] = -np.inf  # a row that sees no key: all of it goes to the sink
    return {
        "attn_scores": scores,
        "sinks": rng.standard_normal(p["H"]),
        "dattn_weights": rng.standard_normal(shape),
    }


@mistake(
    "dsinks_sign",
    "dsinks has the wrong sign",
    "dsinks has the wrong sign. A sink is one more logit of the softmax, with upstream "
    "gradient 0: apply the softmax backward to that logit and watch the sign of what is left.",
)
def _dsinks_sign(attn_scores, sinks, dattn_weights):
    dattn_scores, dsinks = sinks_backward(attn_scores, sinks, dattn_weights)
    return dattn_scores, -dsinks


@mistake(
    "dsinks_mean",
    "dsinks averaged over batch and rows",
    "One sink logit is used by "
    "every row of its head: add the rows' gradients, do not average them.",
)
def _dsinks_mean(attn_scores, sinks, dattn_weights):
    dattn_scores, dsinks = sinks_backward(attn_scores, sinks, dattn_weights)
    B, _, L, _ = attn_scores.shape
    return dattn_scores, dsinks / (B * L)


@mistake(
    "sink_left_out",
    "the scores' gradient ignores the sink",
    "The weights sum to "
    "1 - p_sink, not 1: use the forward's weights (with the sink in the denominator) in "
    "the softmax backward.",
)
def _sink_left_out(attn_scores, sinks, dattn_weights):
    _, dsinks = sinks_backward(attn_scores, sinks, dattn_weights)
    return F.softmax_backward(dattn_weights, F.softmax(attn_scores)), dsinks


@mistake(
    "dsinks_zero",
    "no gradient for the sinks",
    "The sinks are learned, so they get a gradient. Treat each one as an extra logit in every"
    " row of its head, with upstream gradient 0, and add up what the softmax backward gives "
    "it over those rows.",
)
def _dsinks_zero(attn_scores, sinks, dattn_weights):
    dattn_scores, dsinks = sinks_backward(attn_scores, sinks, dattn_weights)
    return dattn_scores, np.zeros_like(dsinks)


EXERCISE = Exercise(
    name="sinks_backward",
    title="Attention sinks backward",
    part="beyond",
    docs="modern/sinks.md",
    args=("attn_scores", "sinks", "dattn_weights"),
    outputs=("dattn_scores", "dsinks"),
    stub=STUB,
    hints=HINTS,
    solution=sinks_backward,
    reference=reference,
    make_inputs=make_inputs,
    params={
        "B": (1, 2),
        "H": (1, 3),
        "L": (1, 3),
        "S": (1, 4),
        "big": (0, 1),
        "masked_row": (0, 1),
    },
    mistakes=(_dsinks_sign, _dsinks_mean, _sink_left_out, _dsinks_zero),
)
