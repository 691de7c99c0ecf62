"""The modern stages as small float64 examples for `python -m npattn gradcheck`: RoPE (partial
and interleaved too), RMSNorm (with Gemma's offset too), soft-capping, sinks, the
sliding-window mask, the GQA / MLA / SWA / Qwen3 classes and DeepSeek's latent attention
(LatentAttention).

The tuples have the formats of stages.op_stages and stages.module_stages:
(name, forward, backward, inputs, kwargs, wrt) for gradcheck.check_op, (name, module, x) for
gradcheck.check_module. Sizes are tiny: each check is O(n) forwards.
"""

from __future__ import annotations

import numpy as np

from . import functional as F
from .models import Attention, AttentionConfig, LatentAttention, LatentConfig, QKNorm
from .modules import (
    GroupedQueryAttention,
    MultiHeadAttentionWithSWA,
    MultiHeadLatentAttention,
    Qwen3Attention,
    RMSNorm,
)

# Llama 3 with Llama 3.1's frequency scaling, its original context short enough to matter
LLAMA31 = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_context_length=4)
LLAMA31_SETTINGS = dict(rope_base=500_000.0, context_length=4, rope_freq_config=LLAMA31)


def modern_op_cases(seed: int = 0):
    """(name, forward, backward, inputs, kwargs, wrt) for every modern op."""
    rng = np.random.default_rng(seed)
    r = rng.standard_normal
    B, H, T, S, E = 2, 2, 4, 5, 4
    cos, sin = F.compute_rope_params(E, context_length=8)
    partial = F.RoPE(fraction=2 / 3)  # head dim 6: the first 4 dims turn, 2 pass through
    cos_p, sin_p = partial.tables(6, np.arange(3, 3 + T))  # (T, 4)
    yarn = F.RoPE(fraction=2 / 3, interleaved=True, scaling=F.YaRN(4.0, 2))
    cos_y, sin_y = yarn.tables(6, np.array([[0, 1, 2, 3], [5, 6, 7, 8]]))  # (B, T, 4)
    keep = rng.random((B, H, T, S)) >= 0.3
    bool_mask = rng.random((T, S)) > 0.3
    bool_mask[0] = False  # one fully masked row
    qkv = {"q": r((B, H, T, E)), "k": r((B, H, S, E)), "v": r((B, H, S, 2))}
    return [
        (
            "rope, split halves, offset 3",
            F.rope_forward,
            F.rope_backward,
            {"x": r((B, H, T, E))},
            {"cos": cos, "sin": sin, "offset": 3},
            None,
        ),
        (
            "rope, interleaved",
            F.rope_forward,
            F.rope_backward,
            {"x": r((B, T, E))},
            {"cos": cos, "sin": sin, "interleaved": True},
            None,
        ),
        (
            "rope_apply, partial rotary (R = 4 of E = 6), split halves, (B, 1, T, R) tables",
            F.rope_apply_forward,
            F.rope_apply_backward,
            {"x": r((B, H, T, 6))},
            {"cos_t": cos_p[None, None], "sin_t": sin_p[None, None]},
            None,
        ),
        (
            "rope_apply, partial rotary (R = 4 of E = 6), interleaved, YaRN tables",
            F.rope_apply_forward,
            F.rope_apply_backward,
            {"x": r((B, T, 6))},
            {"cos_t": cos_y, "sin_t": sin_y, "interleaved": True},
            None,
        ),
        (
            "rmsnorm",
            F.rmsnorm_forward,
            F.rmsnorm_backward,
            {"x": r((B, T, E)), "scale": r(E)},
            {},
            None,
        ),
        (
            "rmsnorm, offset 1 (Gemma's 1 + scale)",
            F.rmsnorm_forward,
            F.rmsnorm_backward,
            {"x": r((B, T, E)), "scale": 0.3 * r(E)},
            {"offset": 1.0},
            None,
        ),
        (
            "softcap",
            F.softcap_forward,
            F.softcap_backward,
            {"scores": 3 * r((T, S))},
            {"cap": 2.0},
            None,
        ),
        (
            "softmax with a sink",
            F.softmax_with_sink_forward,
            F.softmax_with_sink_backward,
            {"attn_scores": r((H, T, S)), "sinks": r(H)},
            {},
            None,
        ),
        (
            "sdpa softcap, causal, L != S",
            F.sdpa_forward,
            F.sdpa_backward,
            dict(qkv),
            {"is_causal": True, "softcap": 1.5},
            None,
        ),
        (
            "sdpa sinks, bool mask (a fully masked row), GQA",
            F.sdpa_forward,
            F.sdpa_backward,
            {"q": r((B, 4, T, E)), "k": r((B, 2, S, E)), "v": r((B, 2, S, 2)), "sinks": r(4)},
            {"attn_mask": bool_mask, "enable_gqa": True},
            None,
        ),
        (
            "sdpa sliding window 2, GQA, L > S (a row past S + 1 has no key)",
            F.sdpa_forward,
            F.sdpa_backward,
            {"q": r((B, 4, 5, E)), "k": r((B, 2, 3, E)), "v": r((B, 2, 3, 2))},
            {"attn_mask": F.sliding_window_mask(5, 3, window=2), "enable_gqa": True},
            None,
        ),
        (
            "sdpa sliding window 3 + softcap + sinks (H,), L < S",
            F.sdpa_forward,
            F.sdpa_backward,
            dict(qkv, sinks=r(H)),
            {"attn_mask": F.sliding_window_mask(T, S, window=3), "softcap": 2.0},
            None,
        ),
        (
            "sdpa sinks (B, H, L, 1) + softcap + dropout",
            F.sdpa_forward,
            F.sdpa_backward,
            dict(qkv, sinks=r((B, H, T, 1))),
            {"softcap": 2.0, "dropout_p": 0.3, "dropout_mask": keep},
            None,
        ),
    ]


def modern_module_cases(seed: int = 0):
    """(name, module, x) for every modern class, small, with dropout where it exists."""
    x = np.random.default_rng(seed).standard_normal((2, 4, 6))
    qwen3 = Qwen3Attention(6, 2, 1, 4, context_length=8, rng=seed)
    norm_rng = np.random.default_rng(seed + 1)
    norm_scales = norm_rng.standard_normal((2, 4)).astype(np.float32)  # not all ones
    qwen3.load_state_dict(
        dict(qwen3.state_dict(), **{"q_norm.scale": norm_scales[0], "k_norm.scale": norm_scales[1]})
    )
    rms = RMSNorm(6)
    rms.load_state_dict({"scale": norm_scales[0].repeat(2)[:6]})
    # DeepSeek-V3: q LoRA, interleaved RoPE on 2 of each head's 4 query/key dims, biases
    sizes = dict(hidden_size=6, num_heads=2, kv_lora_rank=3, qk_nope_head_dim=2)
    sizes.update(qk_rope_head_dim=2, v_head_dim=2)
    deepseek = LatentAttention(
        LatentConfig(
            **sizes, q_lora_rank=3, qkv_bias=True, out_bias=True, dropout=0.25,
            rope=F.RoPE(interleaved=True),
        ),
        rng=seed,
    )  # fmt: skip
    latent_scales = {"q_norm.scale": norm_scales[0][:3], "kv_norm.scale": norm_scales[1][:3]}
    deepseek.load_state_dict(dict(deepseek.state_dict(), **latent_scales))
    gemma = RMSNorm(6, offset=1.0)
    gemma.load_state_dict({"scale": 0.3 * norm_scales[1].repeat(2)[:6]})
    return [
        ("RMSNorm", rms, x),
        ("RMSNorm, offset 1 (Gemma)", gemma, x),
        (
            "GroupedQueryAttention, 4 heads, 2 groups",
            GroupedQueryAttention(6, 8, 0.25, 4, 2, True, rng=seed),
            x,
        ),
        ("GroupedQueryAttention, MQA", GroupedQueryAttention(6, 6, 0.25, 3, 1, rng=seed), x),
        (
            "MultiHeadLatentAttention",
            MultiHeadLatentAttention(6, 4, 0.25, 2, True, 3, rng=seed),
            x,
        ),
        (
            "MultiHeadAttentionWithSWA, window 2",
            MultiHeadAttentionWithSWA(6, 4, 0.25, 2, True, 2, rng=seed),
            x,
        ),
        ("Qwen3Attention", qwen3, x),
        ("LatentAttention, DeepSeek-V3 (q LoRA, interleaved RoPE, dropout)", deepseek, x),
        (
            "LatentAttention, no q LoRA, split-halves RoPE",
            LatentAttention(LatentConfig(6, 3, None, 2, 2, 2, 3, rope=F.RoPE()), rng=seed),
            x,
        ),
        (
            "Qwen3Attention, Llama 3 (no qk_norm)",
            Qwen3Attention(6, 3, 3, 2, False, rope_base=500_000.0, context_length=4, rng=seed),
            x,
        ),
        (
            "Qwen3Attention, Llama 3.1 (frequency scaling)",
            Qwen3Attention(6, 2, 1, 4, False, **LLAMA31_SETTINGS, rng=seed),
            x,
        ),
        *attention_module_cases(x, seed),
    ]


def attention_module_cases(x, seed: int = 0):
    """(name, module, x) for npattn.Attention with the options real models switch on; every
    parameter random (norm scales and sinks too), so no gradient is trivially 0 or 1."""
    from .ops.rope_config import RoPE

    def attention(**options):
        m = Attention(AttentionConfig(hidden_size=6, **options), rng=seed)
        rng = np.random.default_rng(seed + 2)
        m.load_state_dict({k: rng.normal(0, 0.5, v.shape) for k, v in m.state_dict().items()})
        return m

    every_option = dict(num_heads=4, num_kv_heads=2, head_dim=4, qkv_bias=True, out_bias=True,
                        scale=0.7, window=3, softcap=2.0, sinks=True)  # fmt: skip
    return [
        (
            "Attention, GQA + biases + window 3 + softcap + sinks + partial RoPE",
            attention(**every_option, rope=RoPE(fraction=0.5), dropout=0.25),
            x,
        ),
        (
            "Attention, QK-norm over the whole width (OLMo 2)",
            attention(num_heads=2, head_dim=4, qk_norm=QKNorm(width="all"), rope=RoPE()),
            x,
        ),
        (
            "Attention, QK-norm (1 + w) per head, interleaved RoPE (Gemma 3)",
            attention(
                num_heads=2,
                num_kv_heads=1,
                head_dim=4,
                rope=RoPE(interleaved=True),
                qk_norm=QKNorm(offset=1.0),
                scale=0.4,
            ),  # fmt: skip
            x,
        ),
    ]
