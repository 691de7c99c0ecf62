"""Exercise (forward): one decoding step with a KV cache."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def kv_decode_step(q, k_cache, v_cache, k_new, v_new):
    """Attention output of one new token at decode time: its query attends to every cached
    key and to its own key (no mask needed: the cache holds only the past).

    Shapes: q (B, H, 1, E); k_cache, v_cache (B, H, S0, E) (S0 may be 0);
    k_new, v_new (B, H, 1, E) -> out (B, H, 1, E). Scale 1 / sqrt(E).
    """
    raise NotImplementedError("write one decoding step")
'''

HINTS = (
    "Append the new key and value behind the cache: keys (B, H, S0 + 1, E).",
    "The new token is the last position, so it may see every key: no causal mask is needed "
    "(a top-left causal mask of one row would hide all but the first key).",
    "Then it is ordinary attention: softmax(q @ keys^T / sqrt(E)) @ values.",
)


def kv_decode_step(q, k_cache, v_cache, k_new, v_new):
    keys = np.concatenate([k_cache, k_new], axis=-2)  # (B, H, S0 + 1, E)
    values = np.concatenate([v_cache, v_new], axis=-2)
    scores = q @ np.swapaxes(keys, -1, -2) / np.sqrt(q.shape[-1])  # (B, H, 1, S0 + 1)
    w = np.exp(scores - scores.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    return w @ values  # (B, H, 1, E)


def reference(q, k_cache, v_cache, k_new, v_new):
    keys = np.concatenate([k_cache, k_new], axis=-2)
    values = np.concatenate([v_cache, v_new], axis=-2)
    return (F.scaled_dot_product_attention(q, keys, values),)


def make_inputs(p, rng):
    B, H, S0, E = p["B"], p["H"], p["S0"], p["E"]
    return {
        "q": rng.standard_normal((B, H, 1, E)),
        "k_cache": rng.standard_normal((B, H, S0, E)),
        "v_cache": rng.standard_normal((B, H, S0, E)),
        "k_new": rng.standard_normal((B, H, 1, E)),
        "v_new": rng.standard_normal((B, H, 1, E)),
    }


@mistake(
    "new_token_left_out",
    "the new token's own key and value are left out",
    "Append k_new and v_new to the cache before attending: a token attends to itself.",
)
def _new_token_left_out(q, k_cache, v_cache, k_new, v_new):
    return F.scaled_dot_product_attention(q, k_cache, v_cache)


@mistake(
    "causal_top_left",
    "a causal mask on the one-row query",
    "With one query and "
    "S0 + 1 keys, a top-left causal mask keeps only key 0. The cache holds only the past: "
    "use no mask (or a mask at absolute positions).",
)
def _causal_top_left(q, k_cache, v_cache, k_new, v_new):
    keys = np.concatenate([k_cache, k_new], axis=-2)
    values = np.concatenate([v_cache, v_new], axis=-2)
    return F.scaled_dot_product_attention(q, keys, values, is_causal=True)


@mistake(
    "no_scale",
    "the scores are not scaled",
    "Decoding computes the same attention as the full forward: scale the scores by 1 / sqrt(E).",
)
def _no_scale(q, k_cache, v_cache, k_new, v_new):
    keys = np.concatenate([k_cache, k_new], axis=-2)
    values = np.concatenate([v_cache, v_new], axis=-2)
    return F.scaled_dot_product_attention(q, keys, values, scale=1.0)


EXERCISE = Exercise(
    name="kv_decode_step",
    title="A decoding step with a KV cache",
    part="beyond",
    docs="modern/kv_cache.md",
    args=("q", "k_cache", "v_cache", "k_new", "v_new"),
    outputs=("out",),
    stub=STUB,
    hints=HINTS,
    solution=kv_decode_step,
    reference=reference,
    make_inputs=make_inputs,
    params={"B": (1, 2), "H": (1, 2), "S0": (0, 4), "E": (1, 3)},
    mistakes=(_new_token_left_out, _causal_top_left, _no_scale),
)
