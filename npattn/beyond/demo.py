"""The demo's last section: the attention of today's open models on the chapter's six tokens.

Each modern class (GroupedQueryAttention, MultiHeadLatentAttention, MultiHeadAttentionWithSWA,
Qwen3Attention) runs on the chapter's batch, "Your journey starts with one step" twice, with
weights seeded by rng=SEED. For each it prints the output shape, the context vector of the
last token, what its KV cache holds, and one check: its hand-written backward against central
differences in float64 (npattn.gradcheck). Every number is computed here.

Shapes: batch (B=2, T=6, d_in=3) -> each module's output (2, 6, d_out).
"""

from __future__ import annotations

import textwrap

import numpy as np

from ..chapter.data import TOKENS, chapter_batch
from ..gradcheck import check_module
from ..modules import (
    GroupedQueryAttention,
    MultiHeadAttentionWithSWA,
    MultiHeadLatentAttention,
    Qwen3Attention,
)

SEED = 123  # the chapter's seed, for npattn's own initialisation
DECIMALS = 4
WIDTH = 92
WINDOW = 3


def modern_modules(seed: int = SEED) -> dict:
    """The four modern classes at the chapter's size (d_in=3), keyed by how they were built.

    Shapes: each maps (B, T, 3) -> (B, T, 4), except Qwen3Attention: (B, T, 3) -> (B, T, 3).
    """
    return {
        "GroupedQueryAttention(3, 4, 0.0, num_heads=2, num_kv_groups=1)": GroupedQueryAttention(
            3, 4, 0.0, num_heads=2, num_kv_groups=1, rng=seed
        ),
        "MultiHeadLatentAttention(3, 4, 0.0, num_heads=2, latent_dim=2)": (
            MultiHeadLatentAttention(3, 4, 0.0, num_heads=2, latent_dim=2, rng=seed)
        ),
        f"MultiHeadAttentionWithSWA(3, 4, 0.0, num_heads=2, sliding_window_size={WINDOW})": (
            MultiHeadAttentionWithSWA(3, 4, 0.0, num_heads=2, sliding_window_size=WINDOW, rng=seed)
        ),
        "Qwen3Attention(3, num_heads=2, num_kv_groups=1, head_dim=2, context_length=6)": (
            Qwen3Attention(3, num_heads=2, num_kv_groups=1, head_dim=2, context_length=6, rng=seed)
        ),
    }


NOTES = {
    "GroupedQueryAttention": "Multi-query attention: both query heads share one key/value head.",
    "MultiHeadLatentAttention": (
        "Keys and values are up-projected from a 2-number latent per token; the cache holds "
        "only the latent."
    ),
    "MultiHeadAttentionWithSWA": (
        f"Each token attends to itself and the {WINDOW - 1} tokens before it; the cache keeps "
        f"the last {WINDOW} positions."
    ),
    "Qwen3Attention": (
        "RMSNorm on each head's queries and keys, then RoPE at each token's position, "
        "grouped heads, causal."
    ),
}


def _say(text: str) -> None:
    print(textwrap.fill(text, WIDTH))


def _row(a) -> str:
    return "[" + ", ".join(f"{v:{' ' if np.any(a < 0) else ''}.{DECIMALS}f}" for v in a) + "]"


def module_summary(name: str, module, batch) -> dict:
    """Run one module on the batch: output, cache after a cached forward, gradient check.

    Shapes: batch (B, T, d_in) -> "output" (B, T, d_out); "cache" {attribute: shape}.
    """
    out = module(batch)  # the full forward, the module's own dtype
    module(batch, use_cache=True)  # the same tokens through the cache
    cache = {
        n: getattr(module, n).shape
        for n in ("cache_k", "cache_v", "cache_c_kv")
        if getattr(module, n, None) is not None
    }
    nbytes = module.cache_nbytes
    module.reset_cache()
    report = check_module(module, batch.astype(np.float64), seed=0)
    worst = max(report, key=lambda r: r.max_abs_err)
    return {
        "name": name,
        "output": out,
        "cache": cache,
        "cache_nbytes": nbytes,
        "report": report,
        "worst": worst,
    }


def demo_modern(batch=None, seed: int = SEED) -> list[dict]:
    """Print the section; returns the summaries (one dict per module, as module_summary)."""
    batch = chapter_batch() if batch is None else batch
    print(f"\n{'=' * WIDTH}\nBeyond chapter 3: the attention of today's open models\n{'=' * WIDTH}")
    _say(
        "The modern classes on the same batch, the six tokens twice, with npattn's seeded "
        f"initialisation (rng={seed}). Each prints its output, the context vector of the last "
        f'token ("{TOKENS[-1]}"), what its KV cache holds after the six tokens, and its '
        "backward against central differences in float64."
    )
    summaries = []
    for name, module in modern_modules(seed).items():
        s = module_summary(name, module, batch)
        cls = type(module).__name__
        print(f"\n{name}")
        _say(NOTES[cls])
        print(f"  output shape {s['output'].shape}, last token: {_row(s['output'][0, -1])}")
        cache = ", ".join(f"{n} {shape}" for n, shape in s["cache"].items())
        print(f"  cache: {cache}, {s['cache_nbytes']} bytes")
        w = s["worst"]
        verdict = "agree" if s["report"].passed else "DISAGREE"
        print(
            f"  backward vs central differences ({len(s['report'])} arrays): {verdict}, "
            f"largest error {w.max_abs_err:.1e} ({w.name})"
        )
        summaries.append(s)
    print()
    _say("The derivations are in the docs, section 'Beyond chapter 3'.")
    return summaries
