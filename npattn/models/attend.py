"""attention(): the one signature every arrangement of the attention step answers to.

    attention_forward(impl, q, k, v, mask, *, scale, softcap, sinks, dropout_p, rng)
        -> (out, cache)

impl "reference" draws the mask (Mask.dense) and runs sdpa_forward, one numpy call per line
of maths; "tiled" runs flash_attention_forward, which asks the Mask description about each
block, so no (T, S) array is formed and memory stays linear in T (full forwards only);
"auto" picks tiled for full forwards of AUTO_TILED_MIN_TOKENS tokens or more.
`attention_inference` is the forward-only form cached decoding runs (fast/grouped.py).
A new option of the attention step is one more argument here.

Shape legend: B batch, H query heads, G key/value heads (G divides H), T queries, S keys,
E head dim of q and k, Ev head dim of v.
"""

from __future__ import annotations

from ..fast.dispatch import attention_backward
from ..fast.grouped import grouped_attention
from ..fast.modern_tiled import tiled_attention_forward
from ..ops.sdpa import sdpa_forward
from .mask import Mask

ATTENTION_IMPLS = ("reference", "tiled", "auto")
# "auto" runs tiled from this many queries on. Measured on 2 cores (d = 768, 12 heads,
# float32, forward + backward, medians of 5 interleaved repeats, with no options and with
# GQA 12/4, RoPE, QK-norm, a window of 512, soft-cap and sinks), tiled took this fraction of
# the reference's time:
#   B = 1: T = 64, 128, 256, 512: 1.77, 0.89, 1.19, 0.82 (no options); 1.63, 1.28, 1.04, 0.73
#   B = 4: T = 128, 256, 512:           1.20, 1.10, 0.66;                  1.20, 0.82, 0.58
# so tiled from 512 tokens, where it is faster in every case measured (and forms no (T, T)
# array); below, the reference is as fast or faster and keeps m.attn_weights.
AUTO_TILED_MIN_TOKENS = 512

__all__ = ["ATTENTION_IMPLS", "attention_backward", "attention_forward", "attention_inference"]


def resolve_impl(impl: str, mask: Mask) -> str:
    """The arrangement "auto" runs: tiled for a full forward from AUTO_TILED_MIN_TOKENS
    queries on, where it is faster than the reference and its memory grows as T, not T^2."""
    if impl != "auto":
        return impl
    return "tiled" if mask.full and mask.T >= AUTO_TILED_MIN_TOKENS else "reference"


def attention_forward(
    impl: str, q, k, v, mask: Mask, *, scale: float, softcap=None, sinks=None,
    dropout_p: float = 0.0, rng=None,
):  # fmt: skip
    """Scaled dot-product attention with GQA, soft-capping and sinks, in one arrangement.

    Shapes: q (B, H, T, E), k (B, G, S, E), v (B, G, S, Ev), sinks (H,) or None
    -> out (B, H, T, Ev), cache for attention_backward. The tiled arrangement needs a full
    forward (mask.full).
    """
    if resolve_impl(impl, mask) == "tiled":
        if not mask.full:
            raise ValueError("the tiled attention runs full forwards only (no cached keys)")
        return tiled_attention_forward(
            q, k, v, mask.padding, causal=mask.causal, window=mask.window, scale=scale,
            softcap=softcap, sinks=sinks, dropout_p=dropout_p, rng=rng, enable_gqa=True,
        )  # fmt: skip
    return sdpa_forward(
        q, k, v, mask.dense(), dropout_p, scale=scale, enable_gqa=True, rng=rng,
        softcap=softcap, sinks=sinks,
    )  # fmt: skip


def attention_inference(
    q, k, v, mask: Mask, *, scale: float, softcap=None, sinks=None, dropout_p: float = 0.0,
    rng=None,
):  # fmt: skip
    """Forward only: attention_forward's numbers with no cache and no repeated keys.

    Shapes: as attention_forward -> out (B, H, T, Ev), attn_weights (B, H, T, S), keep-mask
    or None. One query at the newest slot, with no padding and every key inside its window,
    sees every key, so no mask is drawn for it.
    """
    sees_all = mask.T == 1 and mask.q_start == mask.k_start + mask.S - 1
    sees_all = sees_all and mask.padding is None and (mask.window or mask.S) >= mask.S
    dense = None if sees_all else mask.dense()
    return grouped_attention(
        q, k, v, dense, scale=scale, softcap=softcap, sinks=sinks, dropout_p=dropout_p, rng=rng
    )
