"""KV-cache memory: the bytes a decoder's attention caches, per token and per layer, for
multi-head (MHA), grouped-query (GQA), multi-query (MQA), multi-head latent (MLA) and
sliding-window (SWA) attention, from a model's configuration.

Per layer and per sequence, after n tokens, with b bytes per number:
    MHA  2 * H * E * n * b           keys and values of every head
    GQA  2 * G * E * n * b           G key/value heads shared by groups of H / G query heads
    MQA  2 * 1 * E * n * b           one key/value head (GQA with G = 1)
    MLA  C * n * b                   one latent of C numbers per token (DeepSeek-V2 also
                                     caches a small decoupled RoPE key; the book's MLA has none)
    SWA  2 * H * E * min(n, W) * b   the last W positions only
These are the arrays npattn's classes hold (cache_nbytes); tests/test_kv_memory.py checks
the formulas against them.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("MHA", "GQA", "MQA", "MLA", "SWA")


@dataclass(frozen=True)
class KVConfig:
    """The sizes that set a KV cache. d_model is the embedding width (the cache does not depend
    on it; kept to name the model), dtype_bytes the bytes of one cached number."""

    name: str
    d_model: int
    num_heads: int  # H
    head_dim: int  # E
    num_layers: int
    context_length: int
    num_kv_groups: int  # G, for GQA
    latent_dim: int  # C, for MLA
    window: int  # W, for SWA
    dtype_bytes: int


# GPT-2 small (124M) in float32, the book's model. The variants are ours: GQA with 4 groups,
# MLA with the book's default latent_dim = d_out // 8, a window of a quarter of the context.
GPT2_SMALL = KVConfig("GPT-2 small", 768, 12, 64, 12, 1024, 4, 96, 256, 4)
# Qwen3-0.6B in bfloat16: GQA with 8 key/value groups is the real model. MLA (latent_dim =
# H * E // 8) and a window of 4,096 (as Mistral 7B's) are variants at the same size.
QWEN3_0_6B = KVConfig("Qwen3-0.6B", 1024, 16, 128, 28, 40960, 8, 256, 4096, 2)
CONFIGS = (GPT2_SMALL, QWEN3_0_6B)


def kv_numbers_per_token(kind: str, cfg: KVConfig) -> int:
    """Numbers one token adds to one layer's cache (before a window drops old ones)."""
    H, E = cfg.num_heads, cfg.head_dim
    per_token = {
        "MHA": 2 * H * E,
        "GQA": 2 * cfg.num_kv_groups * E,
        "MQA": 2 * E,
        "MLA": cfg.latent_dim,
        "SWA": 2 * H * E,
    }
    if kind not in per_token:
        raise KeyError(f"kind must be one of {KINDS}, got {kind!r}")
    return per_token[kind]


def kv_cache_bytes(
    kind: str, cfg: KVConfig, n_tokens: int, *, batch: int = 1, layers: int = 1
) -> int:
    """Bytes the cache holds after n_tokens, for `batch` sequences and `layers` layers."""
    held = min(n_tokens, cfg.window) if kind == "SWA" else n_tokens  # positions held
    return kv_numbers_per_token(kind, cfg) * held * cfg.dtype_bytes * batch * layers


def kv_memory_rows(configs=CONFIGS) -> list[dict]:
    """One row per (configuration, kind): bytes per token per layer, per layer at full
    context, and for all layers at full context (batch 1)."""
    rows = []
    for cfg in configs:
        for kind in KINDS:
            ctx = cfg.context_length
            rows.append(
                {
                    "model": cfg.name,
                    "kind": kind,
                    "per_token_per_layer": kv_cache_bytes(kind, cfg, 1),
                    "per_layer_at_context": kv_cache_bytes(kind, cfg, ctx),
                    "all_layers_at_context": kv_cache_bytes(kind, cfg, ctx, layers=cfg.num_layers),
                }
            )
    return rows


def _size(n: int) -> str:
    """Bytes in binary units: 1,536 -> '1.5 KiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def kv_memory_table(configs=CONFIGS) -> str:
    """The rows of kv_memory_rows as a text table."""
    head = (
        f"{'model':<13}{'kind':<6}{'per token, one layer':>22}{'one layer, full context':>25}"
        f"{'all layers, full context':>26}"
    )
    lines = [head, "-" * len(head)]
    for r in kv_memory_rows(configs):
        lines.append(
            f"{r['model']:<13}{r['kind']:<6}{r['per_token_per_layer']:>17,} B"
            f"{_size(r['per_layer_at_context']):>25}{_size(r['all_layers_at_context']):>26}"
        )
    return "\n".join(lines)
