"""torch_port's modern attention classes as benchmark paths: grouped-query attention,
multi-head latent attention, sliding-window attention and Qwen3's attention, each at the
benchmark size with the inputs of the other paths. A class that cannot be built is skipped
with the reason.

Settings (each path's note says them): G = 4 key/value groups where H divides by 4 (else the
largest of 2 and 1 that divides H), a latent of C = d // 4 numbers per token, a window of
W = T // 2 tokens, Qwen3 with QK-norm, RoPE (base 1e6) and context_length = T. Each class has
its own random weights (seeded): their shapes differ from the chapter's class.

Shape legend: B batch, T tokens, d = d_in = d_out, H heads, G key/value heads, C latent size,
W window.
"""

from __future__ import annotations

import math

from paths import Size, _torch_path, torch_inputs
from timing import Path

GQA = "GQA"
MLA = "MLA"
SWA = "Sliding window"
QWEN3 = "Qwen3 attention"
MODERN_NAMES = (GQA, MLA, SWA, QWEN3)
MODERN_GROUP = "modern"  # Path.group of these paths: the "family" column of the GPU tables


def kv_groups(num_heads: int) -> int:
    """4 key/value groups where num_heads divides by 4, else the largest of 2 and 1 that does."""
    return math.gcd(num_heads, 4)


def _builders(size: Size, dtype):
    """(name, note, constructor) per class; constructors run only for the names asked for."""
    import torch_port as tp

    d, H, T = size.d, size.H, size.T
    G, C, W = kv_groups(H), max(1, d // 4), max(1, T // 2)
    per_group = f"{H // G} query head{'s' if H // G > 1 else ''} each"
    return (
        (
            GQA,
            f"GroupedQueryAttention, {G} key/value groups, {per_group}",
            lambda: tp.GroupedQueryAttention(d, d, 0.0, H, num_kv_groups=G, dtype=dtype),
        ),
        (
            MLA,
            f"MultiHeadLatentAttention, latent_dim {C}",
            lambda: tp.MultiHeadLatentAttention(d, d, 0.0, H, latent_dim=C, dtype=dtype),
        ),
        (
            SWA,
            f"MultiHeadAttentionWithSWA, window {W}",
            lambda: tp.MultiHeadAttentionWithSWA(d, d, 0.0, H, sliding_window_size=W, dtype=dtype),
        ),
        (
            QWEN3,
            f"Qwen3Attention, {G} key/value groups, QK-norm, RoPE",
            lambda: tp.Qwen3Attention(d, H, G, qk_norm=True, context_length=T, dtype=dtype),
        ),
    )


def modern_paths(
    size: Size, device="cpu", dtype=None, names=None, log=print, seed: int = 123
) -> list[Path]:
    """One path per modern torch_port class (in eval mode), forward and forward+backward.

    The input x and upstream gradient g are numpy_inputs(size), as for the other paths.
    """
    if names is not None and not set(names) & set(MODERN_NAMES):
        return []
    try:
        import torch
    except ImportError as e:
        log(f"  skipped every modern path: {e}")
        return []
    dtype = dtype or torch.float32
    x, g, sync = torch_inputs(size, device, dtype)
    paths = []
    try:
        builders = _builders(size, dtype)
    except ImportError as e:
        log(f"  skipped every modern path: {e}")
        return []
    for name, note, build in builders:
        if names is not None and name not in names:
            continue
        torch.manual_seed(seed)
        try:
            module = build().to(device=device, dtype=dtype).eval()
        except (AttributeError, RuntimeError, TypeError, ValueError) as e:
            log(f"  skipped {name}: {type(e).__name__}: {e}")
            continue
        path = _torch_path(name, module, x, g, sync, note=note)
        path.group = MODERN_GROUP
        paths.append(path)
    return paths
