"""Each supported transformers attention layer's settings as an npattn.AttentionConfig.

config_of(layer) reads only layer.config (the model's config) and layer.layer_idx (which
picks the layer's type: full or sliding-window attention, and Gemma 3's RoPE of that type),
never the layer's weights. The family is the layer's class (LlamaAttention -> "llama").

Shape legend: H = num_attention_heads, G = num_key_value_heads, E = head_dim, d = hidden_size.
"""

from __future__ import annotations

import npattn
from npattn.models.config import AttentionConfig, QKNorm
from npattn.ops import rope_config

# the layer's class -> its family (transformers' model_type, as for AutoConfig)
LAYER_CLASSES = {
    "DeepseekV3Attention": "deepseek_v3",
    "GPT2Attention": "gpt2",
    "GPTNeoXAttention": "gpt_neox",
    "Gemma2Attention": "gemma2",
    "Gemma3Attention": "gemma3",
    "GptOssAttention": "gpt_oss",
    "LlamaAttention": "llama",
    "MistralAttention": "mistral",
    "MixtralAttention": "mixtral",
    "Olmo2Attention": "olmo2",
    "Phi3Attention": "phi3",
    "Qwen2Attention": "qwen2",
    "Qwen3Attention": "qwen3",
}


class UnsupportedLayerError(TypeError):
    """A layer whose family (or one of whose settings) torch_port.hf does not convert."""


def supported_families() -> list[str]:
    """The families config_of knows, sorted (deepseek_v3 once npattn has LatentAttention)."""
    names = set(LAYER_CLASSES.values())
    if not hasattr(npattn, "LatentConfig"):
        names.discard("deepseek_v3")
    return sorted(names)


def family_of(layer) -> str:
    """The layer's family, or UnsupportedLayerError listing the supported ones."""
    family = LAYER_CLASSES.get(type(layer).__name__)
    if family is None or family not in supported_families():
        raise UnsupportedLayerError(
            f"{type(layer).__name__} is not a supported attention layer; the supported "
            f"families are {', '.join(supported_families())}"
        )
    return family


def rope_of(params: dict, max_position_embeddings: int | None = None) -> rope_config.RoPE:
    """npattn.RoPE from a transformers rope_parameters dict.

    rope_type: default, linear, dynamic, llama3 or yarn; rope_theta; partial_rotary_factor.
    Dynamic NTK rescales from config.max_position_embeddings, as transformers does.
    """
    kind = params.get("rope_type", params.get("type", "default"))
    theta = float(params["rope_theta"])
    fraction = float(params.get("partial_rotary_factor", 1.0))
    if kind == "default":
        scaling = None
    elif kind == "linear":
        scaling = rope_config.LinearScaling(factor=float(params["factor"]))
    elif kind == "dynamic":
        scaling = rope_config.DynamicNTK(
            factor=float(params["factor"]),
            original_max_position_embeddings=int(max_position_embeddings),
        )
    elif kind == "llama3":
        scaling = rope_config.Llama3(
            factor=float(params["factor"]),
            low_freq_factor=float(params["low_freq_factor"]),
            high_freq_factor=float(params["high_freq_factor"]),
            original_max_position_embeddings=int(params["original_max_position_embeddings"]),
        )
    elif kind == "yarn":
        original = int(params["original_max_position_embeddings"])
        factor = params.get("factor")
        if factor is None:  # DeepSeek-V3 style: the ratio of the two context lengths
            factor = max_position_embeddings / original
        optional = {k: params.get(k) for k in ("mscale", "mscale_all_dim", "attention_factor")}
        scaling = rope_config.YaRN(
            factor=float(factor),
            original_max_position_embeddings=original,
            beta_fast=float(params.get("beta_fast") or 32.0),
            beta_slow=float(params.get("beta_slow") or 1.0),
            **{k: None if v is None else float(v) for k, v in optional.items()},
            truncate=bool(params.get("truncate", True)),
        )
    else:
        raise UnsupportedLayerError(
            f"rope_type {kind!r} is not supported (default, linear, dynamic, llama3, yarn)"
        )
    return rope_config.RoPE(theta=theta, fraction=fraction, scaling=scaling)


def _layer_type(config, layer_idx: int) -> str:
    types = getattr(config, "layer_types", None)
    return "full_attention" if types is None else types[layer_idx]


def _window(config, layer_idx: int) -> int | None:
    """config.sliding_window on a layer whose type is sliding_attention, else None."""
    if _layer_type(config, layer_idx) != "sliding_attention":
        return None
    return config.sliding_window


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _sizes(config, *, head_dim=None) -> dict:
    return dict(
        hidden_size=config.hidden_size,
        num_heads=config.num_attention_heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        head_dim=_head_dim(config) if head_dim is None else head_dim,
        dropout=float(getattr(config, "attention_dropout", 0.0) or 0.0),
    )


def _not_bidirectional(config, family: str) -> None:
    if getattr(config, "use_bidirectional_attention", False):
        raise UnsupportedLayerError(f"{family} with use_bidirectional_attention is not supported")


def _gpt2(config, layer_idx: int) -> AttentionConfig:
    if getattr(config, "add_cross_attention", False):
        raise UnsupportedLayerError("gpt2 cross-attention layers are not supported")
    E = config.hidden_size // config.num_attention_heads
    scale = E**-0.5 if config.scale_attn_weights else 1.0
    if config.scale_attn_by_inverse_layer_idx:
        scale /= float(layer_idx + 1)
    return AttentionConfig(
        hidden_size=config.hidden_size,
        num_heads=config.num_attention_heads,
        dropout=float(config.attn_pdrop),
        qkv_bias=True,
        out_bias=True,
        scale=None if scale == E**-0.5 else scale,
    )


def _gpt_neox(config, layer_idx: int) -> AttentionConfig:
    E = config.hidden_size // config.num_attention_heads
    return AttentionConfig(
        **_sizes(config, head_dim=E),
        qkv_bias=bool(config.attention_bias),
        out_bias=bool(config.attention_bias),
        rope=rope_of(config.rope_parameters, config.max_position_embeddings),
    )


def _llama_like(config, layer_idx: int, *, window=None, qkv_bias=None, out_bias=None, **extra):
    """Llama's layout: q_proj, k_proj, v_proj, o_proj, biases as config.attention_bias."""
    bias = bool(getattr(config, "attention_bias", False))
    return AttentionConfig(
        **_sizes(config),
        qkv_bias=bias if qkv_bias is None else qkv_bias,
        out_bias=bias if out_bias is None else out_bias,
        rope=rope_of(config.rope_parameters, config.max_position_embeddings),
        window=window,
        **extra,
    )


def _llama(config, layer_idx):
    return _llama_like(config, layer_idx)


def _mistral(config, layer_idx):  # Mixtral's attention is Mistral's; no biases
    window = getattr(config, "sliding_window", None)
    return _llama_like(config, layer_idx, window=window, qkv_bias=False, out_bias=False)


def _qwen2(config, layer_idx):  # biases on q, k, v only; a window on layers >= max_window_layers
    return _llama_like(
        config, layer_idx, window=_window(config, layer_idx), qkv_bias=True, out_bias=False
    )


def _qwen3(config, layer_idx):
    return _llama_like(
        config,
        layer_idx,
        window=_window(config, layer_idx),
        qk_norm=QKNorm(width="head", eps=float(config.rms_norm_eps)),
    )


def _olmo2(config, layer_idx):  # q_norm over H * E, k_norm over G * E, before the split
    return _llama_like(
        config, layer_idx, qk_norm=QKNorm(width="all", eps=float(config.rms_norm_eps))
    )


def _phi3(config, layer_idx):  # fused qkv_proj, no biases
    return _llama_like(
        config,
        layer_idx,
        window=getattr(config, "sliding_window", None),
        qkv_bias=False,
        out_bias=False,
    )


def _gemma2(config, layer_idx):
    _not_bidirectional(config, "gemma2")
    softcap = config.attn_logit_softcapping
    return _llama_like(
        config,
        layer_idx,
        window=_window(config, layer_idx),
        scale=float(config.query_pre_attn_scalar) ** -0.5,
        softcap=None if softcap is None else float(softcap),
    )


def _gemma3(config, layer_idx):
    _not_bidirectional(config, "gemma3")
    layer_type = _layer_type(config, layer_idx)
    bias = bool(config.attention_bias)
    return AttentionConfig(  # no soft-capping: Gemma 3's layer does not pass it on
        **_sizes(config),
        qkv_bias=bias,
        out_bias=bias,
        qk_norm=QKNorm(width="head", eps=float(config.rms_norm_eps), offset=1.0),
        rope=rope_of(config.rope_parameters[layer_type], config.max_position_embeddings),
        scale=float(config.query_pre_attn_scalar) ** -0.5,
        window=_window(config, layer_idx),
    )


def _gpt_oss(config, layer_idx):  # one sink logit per head
    return _llama_like(config, layer_idx, window=_window(config, layer_idx), sinks=True)


FAMILIES = {
    "gemma2": _gemma2,
    "gemma3": _gemma3,
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "gpt_oss": _gpt_oss,
    "llama": _llama,
    "mistral": _mistral,
    "mixtral": _mistral,
    "olmo2": _olmo2,
    "phi3": _phi3,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
}


def config_of(layer) -> AttentionConfig:
    """The npattn configuration of a transformers attention layer (from layer.config and
    layer.layer_idx): sizes, biases, QK-norm, RoPE, scale, window, soft-capping, sinks."""
    family = family_of(layer)
    config = layer.config
    layer_idx = getattr(layer, "layer_idx", None)
    layer_idx = 0 if layer_idx is None else int(layer_idx)
    if family == "deepseek_v3":
        from .latent import latent_config_of

        return latent_config_of(config, layer_idx)
    return FAMILIES[family](config, layer_idx)
