"""The gradient-check cases: every op and module as a small float64 example, for
`python -m npattn gradcheck` and the tests.

Each op case gives (name, forward, backward, inputs, kwargs, wrt) for gradcheck.check_op; each
module case (name, module, x) for gradcheck.check_module. Sizes are tiny: a check runs two
forwards per input element.
"""

from __future__ import annotations

import numpy as np

from . import functional as F
from .modules import (
    CausalAttention,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    SelfAttention_v1,
    SelfAttention_v2,
)


def _softmax_forward(x):
    y = F.softmax(x)
    return y, y


def _softmax_backward(dy, y):
    return F.softmax_backward(dy, y)


def _simple_forward(inputs):
    out, _, cache = F.simple_attention_forward(inputs)
    return out, cache


def _method1_forward(attn_scores, mask):
    """Chapter 3.5.1, method 1: softmax, then zero the future and renormalise."""
    attn_weights = F.softmax(attn_scores)
    out, cache = F.mask_renormalize_forward(attn_weights, mask)
    return out, (attn_weights, cache)


def _method1_backward(dout, cache):
    attn_weights, mask_cache = cache
    return F.softmax_backward(F.mask_renormalize_backward(dout, mask_cache), attn_weights)


def _method2_forward(attn_scores, mask):
    """Chapter 3.5.1, method 2: -inf above the diagonal, then softmax."""
    masked, cache = F.mask_scores_forward(attn_scores, mask)
    attn_weights = F.softmax(masked)
    return attn_weights, (attn_weights, cache)


def _method2_backward(dout, cache):
    attn_weights, mask_cache = cache
    return F.mask_scores_backward(F.softmax_backward(dout, attn_weights), mask_cache)


def op_cases(seed: int = 0):
    """(name, forward, backward, inputs, kwargs, wrt) for every op."""
    rng = np.random.default_rng(seed)
    r = rng.standard_normal
    B, H, T, S, E = 2, 2, 4, 5, 3
    keep = rng.random((B, H, T, S)) >= 0.3  # (B, H, T, S); keep[:, 0] for a (B, T, S) input
    bool_mask = rng.random((T, S)) > 0.3
    bool_mask[0] = False  # one fully masked row
    return [
        ("softmax", _softmax_forward, _softmax_backward, {"x": r((3, 5))}, {}, None),
        (
            "linear",
            F.linear_forward,
            F.linear_backward,
            {"x": r((B, T, 4)), "weight": r((3, 4)), "bias": r(3)},
            {},
            None,
        ),
        (
            "causal, method 1 (tril)",
            _method1_forward,
            _method1_backward,
            {"attn_scores": r((B, T, T))},
            {"mask": F.causal_mask(T)},
            None,
        ),
        (
            "causal, method 2 (-inf)",
            _method2_forward,
            _method2_backward,
            {"attn_scores": r((B, T, T))},
            {"mask": F.causal_mask(T)},
            None,
        ),
        (
            "dropout",
            F.dropout_forward,
            F.dropout_backward,
            {"x": r((B, T, S))},
            {"p": 0.3, "keep": keep[:, 0]},
            None,
        ),
        (
            "split_heads",
            F.split_heads_forward,
            F.split_heads_backward,
            {"x": r((B, T, H * E))},
            {"num_heads": H},
            None,
        ),
        (
            "merge_heads",
            F.merge_heads_forward,
            F.merge_heads_backward,
            {"x": r((B, H, T, E))},
            {},
            None,
        ),
        (
            "simple_attention",
            _simple_forward,
            F.simple_attention_backward,
            {"inputs": r((T, E))},
            {},
            None,
        ),
        (
            "sdpa",
            F.sdpa_forward,
            F.sdpa_backward,
            {"q": r((B, H, T, E)), "k": r((B, H, S, E)), "v": r((B, H, S, 2))},
            {},
            None,
        ),
        (
            "sdpa causal, L != S",
            F.sdpa_forward,
            F.sdpa_backward,
            {"q": r((B, H, T, E)), "k": r((B, H, S, E)), "v": r((B, H, S, 2))},
            {"is_causal": True},
            None,
        ),
        (
            "sdpa bool mask + dropout",
            F.sdpa_forward,
            F.sdpa_backward,
            {"q": r((B, H, T, E)), "k": r((B, H, S, E)), "v": r((B, H, S, 2))},
            {"attn_mask": bool_mask, "dropout_p": 0.3, "dropout_mask": keep},
            None,
        ),
        (
            "sdpa float mask, GQA",
            F.sdpa_forward,
            F.sdpa_backward,
            {"q": r((B, 4, T, E)), "k": r((B, 2, S, E)), "v": r((B, 2, S, 2))},
            {"attn_mask": r((T, S)), "enable_gqa": True, "scale": 0.7},
            None,
        ),
        (
            "tiled (flash) causal, L != S, blocks 2 x 3",
            F.flash_attention_forward,
            F.flash_attention_backward,
            {"q": r((B, H, T, E)), "k": r((B, H, S, E)), "v": r((B, H, S, 2))},
            {"is_causal": True, "block_size": (2, 3)},
            None,
        ),
        (
            "tiled (flash) bool mask + dropout, GQA",
            F.flash_attention_forward,
            F.flash_attention_backward,
            {"q": r((B, 4, T, E)), "k": r((B, 2, S, E)), "v": r((B, 2, S, 2))},
            {
                "attn_mask": bool_mask,
                "enable_gqa": True,
                "block_size": 3,
                "dropout_p": 0.3,
                "rng": seed,  # one key, so every evaluation redraws the same tile masks
            },
            None,
        ),
    ]


def module_cases(seed: int = 0):
    """(name, module, x) for every chapter class, small, with dropout on where it exists."""
    x = np.random.default_rng(seed).standard_normal((2, 4, 5))
    return [
        ("SelfAttention_v1", SelfAttention_v1(5, 3, rng=seed), x[0]),
        ("SelfAttention_v2", SelfAttention_v2(5, 3, qkv_bias=True, rng=seed), x),
        ("CausalAttention", CausalAttention(5, 3, 6, 0.25, qkv_bias=True, rng=seed), x),
        ("MultiHeadAttentionWrapper", MultiHeadAttentionWrapper(5, 2, 6, 0.25, 2, rng=seed), x),
        ("MultiHeadAttention", MultiHeadAttention(5, 4, 6, 0.25, 2, qkv_bias=True, rng=seed), x),
        *(
            (
                f"MultiHeadAttention, attn_impl={impl!r}",
                MultiHeadAttention(5, 4, 6, 0.25, 2, qkv_bias=True, rng=seed, attn_impl=impl),
                x,
            )
            for impl in ("blocked", "tiled")
        ),
    ]
