"""The KV-memory formulas (npattn.beyond.kv_memory) against the bytes npattn's classes actually hold
after N tokens, for MHA, GQA, MQA, MLA and SWA, in float32 and float64."""

import dataclasses

import numpy as np
import pytest

import npattn
from npattn.beyond.kv_memory import (
    CONFIGS,
    KINDS,
    KVConfig,
    kv_cache_bytes,
    kv_memory_rows,
    kv_memory_table,
    kv_numbers_per_token,
)

SMALL = KVConfig("small", 8, 4, 2, 1, 16, 2, 3, 3, 8)


def layer(kind, cfg, dtype):
    """One npattn attention layer of `kind` at the configuration's sizes."""
    d, H, E = cfg.d_model, cfg.num_heads, cfg.head_dim
    m = {
        "MHA": lambda: npattn.GroupedQueryAttention(d, H * E, 0.0, H, H, rng=0),
        "GQA": lambda: npattn.GroupedQueryAttention(d, H * E, 0.0, H, cfg.num_kv_groups, rng=0),
        "MQA": lambda: npattn.GroupedQueryAttention(d, H * E, 0.0, H, 1, rng=0),
        "MLA": lambda: npattn.MultiHeadLatentAttention(
            d, H * E, 0.0, H, latent_dim=cfg.latent_dim, rng=0
        ),
        "SWA": lambda: npattn.MultiHeadAttentionWithSWA(
            d, H * E, 0.0, H, sliding_window_size=cfg.window, rng=0
        ),
    }[kind]()
    return m.astype(dtype).eval()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_formulas_match_the_bytes_the_modules_hold(kind, dtype):
    cfg = dataclasses.replace(SMALL, dtype_bytes=np.dtype(dtype).itemsize)
    B = 2
    x = np.random.default_rng(0).standard_normal((B, 7, cfg.d_model))
    m = layer(kind, cfg, dtype)
    n = 0
    for size in (1, 1, 3, 1, 1):  # one token at a time, and a chunk
        m(x[:, n : n + size], use_cache=True)
        n += size
        assert m.cache_nbytes == kv_cache_bytes(kind, cfg, n, batch=B), (kind, n)
        assert m.cache_allocated_nbytes >= m.cache_nbytes


def test_qwen3_attention_holds_what_the_gqa_formula_says():
    cfg = dataclasses.replace(SMALL, dtype_bytes=8)
    m = npattn.Qwen3Attention(cfg.d_model, cfg.num_heads, cfg.num_kv_groups, cfg.head_dim, rng=0)
    m.astype(np.float64)
    m(np.random.default_rng(0).standard_normal((1, 5, cfg.d_model)), use_cache=True)
    assert m.cache_nbytes == kv_cache_bytes("GQA", cfg, 5)


def test_the_variants_relate_as_their_definitions_say():
    for cfg in CONFIGS:
        mha = kv_numbers_per_token("MHA", cfg)
        assert kv_numbers_per_token("GQA", cfg) * cfg.num_heads == mha * cfg.num_kv_groups
        assert kv_numbers_per_token("MQA", cfg) * cfg.num_heads == mha
        ctx = cfg.context_length
        assert kv_cache_bytes("SWA", cfg, ctx) * ctx == kv_cache_bytes("MHA", cfg, ctx) * min(
            ctx, cfg.window
        )
    rows = kv_memory_rows()
    assert len(rows) == len(CONFIGS) * len(KINDS)
    table = kv_memory_table()
    assert all(cfg.name in table for cfg in CONFIGS)
    with pytest.raises(KeyError, match="kind"):
        kv_numbers_per_token("MHA2", SMALL)
