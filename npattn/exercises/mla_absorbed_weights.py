"""Exercise (forward): MLA's attention weights with W_UK absorbed into the queries."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def mla_absorbed_weights(q, c_kv, W_UK):
    """Multi-head latent attention's weights computed on the cached latents: fold each head's
    block of W_UK into its queries instead of forming the keys W_UK(c_kv).

    Shapes: q (B, H, T, E), c_kv (B, S, C), W_UK (H * E, C) (torch layout: keys = c_kv @ W_UK.T,
    split into heads as (B, S, H, E)) -> attn_weights (B, H, T, S); scale 1 / sqrt(E), no mask.
    The checker compares the weights only: whether you absorbed W_UK is yours to keep honest.
    """
    raise NotImplementedError("write MLA's absorbed attention weights")
'''

HINTS = (
    "Head h's keys are c_kv @ W_h.T with W_h = W_UK[h * E:(h + 1) * E], an (E, C) block; "
    "W_UK.reshape(H, E, C) gives every head's block.",
    "q_h . (W_h c_j) = (W_h^T q_h) . c_j: the absorbed query is q_lat = q @ W_h, (B, H, T, C).",
    "scores = q_lat @ c_kv^T (one latent per token, shared by all heads), times 1 / sqrt(E) "
    "(the head dim of the plain form, not C), then a softmax over S.",
)


def mla_absorbed_weights(q, c_kv, W_UK):
    B, H, T, E = q.shape
    W = W_UK.reshape(H, E, -1)  # (H * E, C) -> (H, E, C): head h's block
    q_lat = q @ W  # (B, H, T, E) @ (H, E, C) -> (B, H, T, C)
    scores = q_lat @ np.swapaxes(c_kv, -1, -2)[:, None] / np.sqrt(E)  # (B, H, T, S)
    w = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return w / w.sum(axis=-1, keepdims=True)


def reference(q, c_kv, W_UK):
    H = q.shape[1]
    keys, _ = F.linear_forward(c_kv, W_UK)  # (B, S, H * E)
    keys, _ = F.split_heads_forward(keys, H)  # (B, H, S, E)
    _, cache = F.sdpa_forward(q, keys, keys)
    return (np.array(cache.attn_weights),)


def make_inputs(p, rng):
    B, H, T, S, E, C = p["B"], p["H"], p["T"], p["S"], p["E"], p["C"]
    return {
        "q": rng.standard_normal((B, H, T, E)),
        "c_kv": rng.standard_normal((B, S, C)),
        "W_UK": rng.standard_normal((H * E, C)) / np.sqrt(C),
    }


def _weights(q, c_kv, W, scale):
    q_lat = q @ W
    return F.softmax(q_lat @ np.swapaxes(c_kv, -1, -2)[:, None] * scale)


@mistake(
    "scale_by_latent",
    "scaled by 1 / sqrt(C) instead of 1 / sqrt(E)",
    "Absorbing W_UK "
    "changes where the product is computed, not its value: keep the plain form's scale, "
    "1 / sqrt(head_dim).",
)
def _scale_by_latent(q, c_kv, W_UK):
    H, E = q.shape[1], q.shape[-1]
    return _weights(q, c_kv, W_UK.reshape(H, E, -1), 1.0 / np.sqrt(c_kv.shape[-1]))


@mistake(
    "heads_interleaved",
    "W_UK split into heads as (E, H, C)",
    "The keys are split as "
    "(B, S, H, E): head h owns rows h * E .. h * E + E - 1 of W_UK, so reshape to "
    "(H, E, C).",
)
def _heads_interleaved(q, c_kv, W_UK):
    H, E = q.shape[1], q.shape[-1]
    W = W_UK.reshape(E, H, -1).transpose(1, 0, 2)
    return _weights(q, c_kv, W, 1.0 / np.sqrt(E))


@mistake(
    "no_softmax",
    "the scores are returned without the softmax",
    "Attention weights are the softmax of the scores over the keys.",
)
def _no_softmax(q, c_kv, W_UK):
    H, E = q.shape[1], q.shape[-1]
    return q @ W_UK.reshape(H, E, -1) @ np.swapaxes(c_kv, -1, -2)[:, None] / np.sqrt(E)


EXERCISE = Exercise(
    name="mla_absorbed_weights",
    title="MLA: attention weights with W_UK absorbed",
    part="beyond",
    docs="modern/mla.md",
    args=("q", "c_kv", "W_UK"),
    outputs=("attn_weights",),
    stub=STUB,
    hints=HINTS,
    solution=mla_absorbed_weights,
    reference=reference,
    make_inputs=make_inputs,
    params={"B": (1, 2), "H": (1, 3), "T": (1, 3), "S": (1, 4), "E": (1, 3), "C": (1, 4)},
    mistakes=(_scale_by_latent, _heads_interleaved, _no_softmax),
)
