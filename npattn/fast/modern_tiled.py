"""attn_impl="tiled" for the modern classes (GroupedQueryAttention, MultiHeadAttentionWithSWA,
Qwen3Attention): the mask and SDPA steps of their full forward as one call to
flash_attention_forward (fast/tiled.py), with no (T, S) array: memory linear in T.

Shape legend: B batch, T query tokens, S key tokens, H query heads, G key/value heads
(G divides H; G = H without GQA), E head dim.

The reference builds attention_mask(0, T, 0, S, window, kpm) (npattn/modules/_kv.py): causal
(0 <= i - j, and i - j < W with a window), & the key padding. Here the same mask is described,
not formed:
    causal, no key padding         is_causal=True, or window=W        (tiles above the diagonal,
                                                                       or outside W, skipped)
    causal, key padding (B, S)     window=W, or window=T when there is none (i - j <= T - 1, so
                                   a window of T is the causal mask itself), & the key padding
                                   as a (B, 1, 1, S) boolean mask
    not causal (cross-attention)   the key padding as a (B, 1, 1, S) boolean mask, or nothing
A window stands in for is_causal with key padding because flash_attention_forward, like torch's
SDPA, takes is_causal or attn_mask, not both, while window= composes with a mask.
"""

from __future__ import annotations

from .tiled import flash_attention_forward

__all__ = ["tiled_attention_forward"]


def tiled_attention_forward(
    queries,
    keys,
    values,
    kpm=None,
    *,
    causal: bool = True,
    window: int | None = None,
    dropout_p: float = 0.0,
    rng=None,
    enable_gqa: bool = False,
    scale: float | None = None,
    softcap: float | None = None,
    sinks=None,
):
    """The modern classes' mask and SDPA steps, tiled: sdpa_forward's numbers with the mask
    attention_mask(0, T, 0, S, window, kpm) would build (causal=False: kpm alone).

    Shapes: queries (B, H, T, E), keys (B, G, S, E), values (B, G, S, Ev), kpm (B, S) boolean
    True = a real key, or None -> context (B, H, T, Ev), FlashCache. Causal needs S = T (the
    full forward, positions 0 .. T - 1); a window only with causal. Dropout draws its own
    tile masks from rng (not the reference's mask). The backward is flash_attention_backward
    (or dispatch.attention_backward, which picks it from the cache's type).
    scale (None: 1 / sqrt(E)), softcap and sinks (H,) go to flash_attention_forward as they
    are; with sinks the backward also returns dsinks.
    """
    T = queries.shape[-2]
    attn_mask = None if kpm is None else kpm[:, None, None, :]  # (B, S) -> (B, 1, 1, S)
    if causal and kpm is not None and window is None:
        window = T  # i - j <= T - 1 < T: the causal mask, which composes with attn_mask
    is_causal = causal and window is None
    return flash_attention_forward(
        queries,
        keys,
        values,
        attn_mask,
        is_causal,
        scale=scale,
        enable_gqa=enable_gqa,
        dropout_p=dropout_p,
        rng=rng,
        window=window,
        softcap=softcap,
        sinks=sinks,
    )
