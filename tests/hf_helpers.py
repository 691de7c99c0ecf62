"""Driving a transformers attention layer as its model does, in float64, beside torch_port's
and npattn's: tiny configs per family, seeded weights, the model's mask and cache, and the
controls that keep transformers' float32 steps out of a float64 comparison.

transformers computes three steps in float32 whatever the input's dtype; each is controlled
here so that the comparison measures the algorithm (~1e-12), not the float32 rounding (~1e-7):
  * eager softmax: `softmax(scores, dtype=torch.float32)` -> `float32_softmax_off()` drops the
    dtype argument for float64 input, within a context manager (GPT-2's and gpt-oss's eager
    softmax already keep the input's dtype);
  * RMSNorm (Qwen3, OLMo 2, Gemma 3 q_norm / k_norm): `x.to(torch.float32)` ->
    `float64_rmsnorm()` patches the family's RMSNorm forward to compute in x's dtype, with
    the family's formula (w * x_hat, or x_hat * (1 + w) for Gemma);
  * RoPE: the rotary module computes inv_freq and the angles in float32 -> the layer is given
    position embeddings computed in float64 from npattn's RoPE tables (`hf_position_embeddings`),
    and the rotary module's own tables are compared with npattn's separately, to float32's
    precision (tests/test_hf_families.py).
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field
from unittest import mock

import numpy as np
import torch

# family -> (module under transformers.models, config class, attention class, rotary class,
#            RMSNorm class used by the attention's q_norm / k_norm, its formula, config kwargs)
FAMILIES = {
    "gpt2": (
        "gpt2",
        "GPT2Config",
        "GPT2Attention",
        None,
        None,
        dict(n_embd=64, n_head=4, n_layer=2, n_positions=64, scale_attn_by_inverse_layer_idx=True),
    ),
    "gpt_neox": (
        "gpt_neox",
        "GPTNeoXConfig",
        "GPTNeoXAttention",
        "GPTNeoXRotaryEmbedding",
        None,
        dict(
            hidden_size=64,
            num_attention_heads=4,
            num_hidden_layers=1,
            intermediate_size=128,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10_000.0,
                "partial_rotary_factor": 0.5,
            },
        ),
    ),
    "llama": (
        "llama",
        "LlamaConfig",
        "LlamaAttention",
        "LlamaRotaryEmbedding",
        None,
        dict(
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            num_hidden_layers=1,
            attention_bias=True,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500_000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        ),
    ),
    "mistral": (
        "mistral",
        "MistralConfig",
        "MistralAttention",
        "MistralRotaryEmbedding",
        None,
        dict(
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            num_hidden_layers=1,
            sliding_window=4,
        ),
    ),
    "mixtral": (
        "mixtral",
        "MixtralConfig",
        "MixtralAttention",
        "MixtralRotaryEmbedding",
        None,
        dict(
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=16,
            num_hidden_layers=1,
            sliding_window=5,
            rope_parameters={"rope_type": "linear", "rope_theta": 1e6, "factor": 4.0},
        ),
    ),
    "qwen2": (
        "qwen2",
        "Qwen2Config",
        "Qwen2Attention",
        "Qwen2RotaryEmbedding",
        None,
        dict(
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_hidden_layers=2,
            use_sliding_window=True,
            sliding_window=4,
            max_window_layers=1,
            max_position_embeddings=8,
            rope_parameters={"rope_type": "dynamic", "rope_theta": 10_000.0, "factor": 2.0},
        ),
    ),
    "qwen3": (
        "qwen3",
        "Qwen3Config",
        "Qwen3Attention",
        "Qwen3RotaryEmbedding",
        ("Qwen3RMSNorm", "w*x"),
        dict(
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            num_hidden_layers=1,
            rope_parameters={
                "rope_type": "yarn",
                "rope_theta": 1e6,
                "factor": 4.0,
                "original_max_position_embeddings": 8,
            },
        ),
    ),
    "gemma2": (
        "gemma2",
        "Gemma2Config",
        "Gemma2Attention",
        "Gemma2RotaryEmbedding",
        None,
        dict(
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            num_hidden_layers=2,
            sliding_window=4,
            query_pre_attn_scalar=24,
            attn_logit_softcapping=2.0,
        ),
    ),
    "gemma3": (
        "gemma3",
        "Gemma3TextConfig",
        "Gemma3Attention",
        "Gemma3RotaryEmbedding",
        ("Gemma3RMSNorm", "x*(1+w)"),
        dict(
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            num_hidden_layers=2,
            layer_types=["sliding_attention", "full_attention"],
            sliding_window=4,
            query_pre_attn_scalar=24,
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                "full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 8.0},
            },
        ),
    ),
    "olmo2": (
        "olmo2",
        "Olmo2Config",
        "Olmo2Attention",
        "Olmo2RotaryEmbedding",
        ("Olmo2RMSNorm", "w*x"),
        dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=1),
    ),
    "phi3": (
        "phi3",
        "Phi3Config",
        "Phi3Attention",
        "Phi3RotaryEmbedding",
        None,
        dict(
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_hidden_layers=1,
            sliding_window=5,
            pad_token_id=0,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10_000.0,
                "partial_rotary_factor": 0.75,
            },
        ),
    ),
    "gpt_oss": (
        "gpt_oss",
        "GptOssConfig",
        "GptOssAttention",
        "GptOssRotaryEmbedding",
        None,
        dict(
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            num_hidden_layers=2,
            sliding_window=4,
            num_local_experts=2,
            num_experts_per_tok=1,
            intermediate_size=32,
        ),
    ),
}

# the layer indices each family is tested at: every layer type it has
LAYERS = {"gemma2": (0, 1), "gemma3": (0, 1), "gpt_oss": (0, 1), "qwen2": (1,), "gpt2": (1,)}


def modeling(family: str):
    name = FAMILIES[family][0]
    return importlib.import_module(f"transformers.models.{name}.modeling_{name}")


def make_config(family: str, attn_implementation: str = "eager", **overrides):
    import transformers

    spec = FAMILIES[family]
    kwargs = {**spec[5], **overrides}
    config = getattr(transformers, spec[1])(**kwargs)
    config._attn_implementation = attn_implementation
    return config


def seeded_(module: torch.nn.Module, seed: int, std: float = 0.1) -> None:
    """Every parameter (norms and sinks included) drawn from N(0, std^2), in float64."""
    g = torch.Generator().manual_seed(seed)
    module.double()
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * std)


@dataclass
class Case:
    family: str
    config: object
    layer: torch.nn.Module
    layer_idx: int
    extras: dict = field(default_factory=dict)

    @property
    def sliding(self) -> bool:
        """Whether the model builds this layer's mask with the sliding-window function."""
        types = getattr(self.config, "layer_types", None)
        if types:
            return types[self.layer_idx] == "sliding_attention"
        return getattr(self.config, "sliding_window", None) is not None


def make_case(family: str, layer_idx: int = 0, seed: int = 0, **overrides) -> Case:
    config = make_config(family, **overrides)
    cls = getattr(modeling(family), FAMILIES[family][2])
    layer = cls(config, layer_idx=layer_idx)
    seeded_(layer, seed)
    layer.eval()
    return Case(family, config, layer, layer_idx)


def rotary_module(case: Case):
    return getattr(modeling(case.family), FAMILIES[case.family][3])(case.config)


def hf_rotary_tables(case: Case, x: torch.Tensor, position_ids: torch.Tensor):
    """The model's rotary module's (cos, sin) for this layer (Gemma 3: of the layer's type)."""
    rotary = rotary_module(case)
    if case.family == "gemma3":
        return rotary(x, position_ids, case.config.layer_types[case.layer_idx])
    return rotary(x, position_ids)


def hf_position_embeddings(case: Case, rope, position_ids: torch.Tensor):
    """(cos, sin) for the layer from npattn's float64 RoPE tables, in transformers' layout:
    (B, T, R); gpt-oss's layer takes the R/2 angles once, not concatenated twice."""
    E = case.layer.head_dim if hasattr(case.layer, "head_dim") else case.layer.head_size
    cos, sin = (torch.from_numpy(t) for t in rope.tables(E, position_ids.numpy()))
    if case.family == "gpt_oss":
        half = cos.shape[-1] // 2
        cos, sin = cos[..., :half], sin[..., :half]
    return cos, sin


def hf_mask(case: Case, x, attention_mask_2d, cache, position_ids):
    """The 4-D mask the model builds for this layer (full or sliding-window)."""
    from transformers import masking_utils

    fn = (
        masking_utils.create_sliding_window_causal_mask
        if case.sliding
        else masking_utils.create_causal_mask
    )
    return fn(
        config=case.config,
        inputs_embeds=x,
        attention_mask=attention_mask_2d,
        cache=cache,
        position_ids=position_ids,
    )


def hf_forward(case: Case, x, position_ids, rope=None, attention_mask_2d=None, cache=None):
    """The layer's output, called as its model calls it. position_ids (B, T)."""
    mask = hf_mask(case, x, attention_mask_2d, cache, position_ids)
    layer = case.layer
    if case.family == "gpt2":
        return layer(x, cache=cache, attention_mask=mask)[0]
    pe = hf_position_embeddings(case, rope, position_ids)
    if case.family == "gpt_neox":
        return layer(x, attention_mask=mask, layer_past=cache, position_embeddings=pe)[0]
    return layer(x, position_embeddings=pe, attention_mask=mask, cache=cache)[0]


def new_cache(case: Case):
    import transformers

    return transformers.DynamicCache(config=case.config)


def _rms_forward(formula: str):
    def forward(self, x):
        eps = getattr(self, "variance_epsilon", getattr(self, "eps", None))
        x_hat = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return x_hat * self.weight if formula == "w*x" else x_hat * (1.0 + self.weight)

    return forward


@contextlib.contextmanager
def float64_transformers(family: str):
    """transformers' float32 steps kept in float64 (see the module docstring)."""
    real_softmax = torch.nn.functional.softmax

    def softmax(input, dim=None, _stacklevel=3, dtype=None):
        if dtype == torch.float32 and input.dtype == torch.float64:
            dtype = None  # the float32 upcast would round a float64 model to float32
        return real_softmax(input, dim=dim, dtype=dtype)

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(torch.nn.functional, "softmax", softmax))
        norm = FAMILIES[family][4]
        if norm is not None:
            cls = getattr(modeling(family), norm[0])
            stack.enter_context(mock.patch.object(cls, "forward", _rms_forward(norm[1])))
        yield


def hf_params(layer) -> dict:
    """Leaf copies of the layer's parameters, by name, that require grad."""
    return {n: p.detach().clone().requires_grad_(True) for n, p in layer.named_parameters()}


def left_padded(B: int, T: int, pads, seed: int = 0):
    """A left-padded batch: mask (B, T) int64 1 = real, position_ids = cumsum - 1 (1 on pads)."""
    mask = torch.ones(B, T, dtype=torch.int64)
    for b, n in enumerate(pads):
        mask[b, :n] = 0
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    return mask, position_ids


def rel_err(a, b) -> float:
    """max |a - b| / max |b| (0 when both are 0)."""
    a = torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a).double()
    b = torch.as_tensor(np.asarray(b) if not torch.is_tensor(b) else b).double()
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff
