"""DeepSeek-V3's multi-head latent attention (transformers' DeepseekV3Attention) as an
npattn.LatentConfig and LatentAttention's state_dict.

Shape legend: H heads, Cq = q_lora_rank, C = kv_lora_rank, Dn = qk_nope_head_dim,
Dr = qk_rope_head_dim, Dv = v_head_dim, d = hidden_size.
"""

from __future__ import annotations

import math

from .families import UnsupportedLayerError, rope_of

# npattn key -> transformers' parameter name: a rename, every weight already (out, in)
NAMES = {
    "W_query.weight": "q_proj.weight",  # (H (Dn + Dr), d), without q LoRA
    "W_q_down.weight": "q_a_proj.weight",  # (Cq, d)
    "W_q_down.bias": "q_a_proj.bias",
    "q_norm.scale": "q_a_layernorm.weight",  # (Cq,)
    "W_q_up.weight": "q_b_proj.weight",  # (H (Dn + Dr), Cq)
    "W_kv_down.weight": "kv_a_proj_with_mqa.weight",  # (C + Dr, d)
    "W_kv_down.bias": "kv_a_proj_with_mqa.bias",
    "kv_norm.scale": "kv_a_layernorm.weight",  # (C,)
    "W_kv_up.weight": "kv_b_proj.weight",  # (H (Dn + Dv), C)
    "out_proj.weight": "o_proj.weight",  # (d, H Dv)
    "out_proj.bias": "o_proj.bias",
}


def _yarn_mscale(scale: float, mscale: float) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def latent_config_of(config, layer_idx: int):
    """The LatentConfig of a DeepseekV3Attention: sizes, biases (attention_bias on q_a_proj,
    kv_a_proj_with_mqa and o_proj), RoPE on the Dr dims (interleaved with rope_interleave), and
    the softmax scale with YaRN's mscale_all_dim folded in, as the layer computes it."""
    import npattn

    H = config.num_attention_heads
    if (getattr(config, "num_key_value_heads", None) or H) != H:
        raise UnsupportedLayerError(
            f"deepseek_v3 with num_key_value_heads ({config.num_key_value_heads}) != "
            f"num_attention_heads ({H}) is not supported"
        )
    params = config.rope_parameters
    rope = rope_of(params, config.max_position_embeddings)
    rope = type(rope)(
        theta=rope.theta,
        fraction=rope.fraction,
        interleaved=bool(config.rope_interleave),
        scaling=rope.scaling,
    )
    scale = None
    mscale_all_dim = params.get("mscale_all_dim") or 0
    if params.get("rope_type", "default") != "default" and mscale_all_dim:
        qk_head_dim = config.qk_nope_head_dim + config.qk_rope_head_dim
        mscale = _yarn_mscale(params["factor"], mscale_all_dim)
        scale = qk_head_dim**-0.5 * mscale * mscale
    bias = bool(config.attention_bias)
    return npattn.LatentConfig(
        hidden_size=config.hidden_size,
        num_heads=H,
        q_lora_rank=config.q_lora_rank,
        kv_lora_rank=config.kv_lora_rank,
        qk_nope_head_dim=config.qk_nope_head_dim,
        qk_rope_head_dim=config.qk_rope_head_dim,
        v_head_dim=config.v_head_dim,
        qkv_bias=bias,
        out_bias=bias,
        norm_eps=1e-6,  # the layer builds both norms with RMSNorm's default, not rms_norm_eps
        rope=rope,
        scale=scale,
        dropout=float(config.attention_dropout or 0.0),
    )


def latent_weight_map(layer):
    """{transformers name: tensor} -> LatentAttention's state_dict: renames (NAMES)."""
    present = {name for name, _ in layer.named_parameters()}
    pairs = [(key, name) for key, name in NAMES.items() if name in present]

    def weight_map(p: dict) -> dict:
        return {key: p[name] for key, name in pairs}

    return weight_map
