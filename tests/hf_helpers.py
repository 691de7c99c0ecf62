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

import npattn

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
            max_position_embeddings=32,
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

if hasattr(npattn, "LatentConfig"):  # DeepSeek-V3's latent attention: npattn.LatentAttention
    FAMILIES["deepseek_v3"] = (
        "deepseek_v3",
        "DeepseekV3Config",
        "DeepseekV3Attention",
        "DeepseekV3RotaryEmbedding",
        ("DeepseekV3RMSNorm", "w*x"),
        dict(
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=4,
            q_lora_rank=24,
            kv_lora_rank=16,
            qk_nope_head_dim=8,
            qk_rope_head_dim=8,
            v_head_dim=12,
            attention_bias=True,
            rope_interleave=True,
            num_hidden_layers=1,
            max_position_embeddings=32,
            rope_parameters={
                "rope_type": "yarn",
                "rope_theta": 10_000.0,
                "factor": 4.0,
                "original_max_position_embeddings": 8,
                "mscale": 1.0,
                "mscale_all_dim": 0.8,
            },
        ),
    )

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


def rope_dim(case: Case) -> int:
    """The head width RoPE's tables are computed for (DeepSeek-V3: the rope part, Dr)."""
    layer = case.layer
    if case.family == "deepseek_v3":
        return layer.qk_rope_head_dim
    return layer.head_dim if hasattr(layer, "head_dim") else layer.head_size


def hf_position_embeddings(case: Case, rope, position_ids: torch.Tensor):
    """(cos, sin) for the layer from npattn's float64 RoPE tables, in transformers' layout:
    (B, T, R); gpt-oss's layer takes the R/2 angles once, not concatenated twice."""
    cos, sin = (torch.from_numpy(t) for t in rope.tables(rope_dim(case), position_ids.numpy()))
    if case.family == "gpt_oss":
        half = cos.shape[-1] // 2
        cos, sin = cos[..., :half], sin[..., :half]
    return cos, sin


def hf_mask(case: Case, x, attention_mask_2d, cache, position_ids):
    """The 4-D mask the model builds for this layer (full or sliding-window). layer_idx names
    the cache layer to read the past length from: the model reads its first layer of the
    type, which in a full model has seen the same tokens; here only this layer runs."""
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
        layer_idx=case.layer_idx,
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


# ---- the quantities compared, for torch_port.Attention ("torch") and npattn.Attention ("npattn")

D_MODEL = 64
QUANTITIES = ("out", "dx", "param grads", "cached decoding", "left-padded decoding")


def inputs(B: int, T: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D_MODEL, generator=g, dtype=torch.float64)
    upstream = torch.randn(B, T, D_MODEL, generator=g, dtype=torch.float64)  # never all ones
    return x, upstream


def hf_grads(case: Case, x, upstream, position_ids, rope):
    """transformers' output, dL/dx and dL/dparam for L = sum(out * upstream)."""
    layer = case.layer
    x = x.clone().requires_grad_(True)
    with float64_transformers(case.family):
        out = hf_forward(case, x, position_ids, rope)
    names = [n for n, _ in layer.named_parameters()]
    grads = torch.autograd.grad(out, [x, *layer.parameters()], upstream)
    return out.detach(), grads[0], dict(zip(names, grads[1:]))


def torch_grads(case: Case, x, upstream, position_ids):
    """torch_port.Attention's output, dL/dx and the parameter gradients pulled back through
    weight_map to transformers' names (autograd through the map)."""
    from torch.func import functional_call

    import torch_port.hf as tph

    m = tph.to_torch(case.layer)
    params = hf_params(case.layer)
    mapped = tph.weight_map(case.layer)(params)
    x = x.clone().requires_grad_(True)
    out = functional_call(m, mapped, (x,), {"positions": position_ids})
    grads = torch.autograd.grad(out, [x, *params.values()], upstream)
    return out.detach(), grads[0], dict(zip(params, grads[1:]))


def npattn_grads(case: Case, x, upstream, position_ids):
    """npattn.Attention's output, its hand-written dL/dx, and its parameter gradients pulled
    back through weight_map to transformers' names (the map's vector-Jacobian product)."""
    import torch_port.hf as tph

    ref = tph.to_npattn(case.layer)
    out = ref.forward(x.numpy(), positions=position_ids.numpy())
    dx = ref.backward(upstream.numpy())
    grads = ref.grads
    params = hf_params(case.layer)
    mapped = tph.weight_map(case.layer)(params)
    keys = list(mapped)
    pulled = torch.autograd.grad(
        [mapped[k] for k in keys],
        list(params.values()),
        [torch.from_numpy(np.asarray(grads[k], dtype=np.float64)) for k in keys],
    )
    return torch.from_numpy(out), torch.from_numpy(dx), dict(zip(params, pulled))


def grad_errors(case: Case, impl: str, B=2, T=7, start=3, seed=1) -> dict:
    """out, dx and the worst parameter gradient's relative error against transformers, at
    positions start .. start + T - 1."""
    import torch_port.hf as tph

    rope = tph.config_of(case.layer).rope
    x, upstream = inputs(B, T, seed)
    position_ids = (torch.arange(T) + start)[None].expand(B, T)
    ref = hf_grads(case, x, upstream, position_ids, rope)
    run = torch_grads if impl == "torch" else npattn_grads
    got = run(case, x, upstream, position_ids)
    errs = {"out": rel_err(got[0], ref[0]), "dx": rel_err(got[1], ref[1])}
    errs["param grads"] = max(rel_err(got[2][n], ref[2][n]) for n in ref[2])
    return errs


def _ours(case: Case, impl: str):
    import torch_port.hf as tph

    if impl == "torch":
        m = tph.to_torch(case.layer)

        def step(x, positions, kpm):
            with torch.no_grad():
                return m(x, use_cache=True, positions=positions, key_padding_mask=kpm)

        return step
    ref = tph.to_npattn(case.layer)

    def step(x, positions, kpm):
        kpm = None if kpm is None else kpm.numpy()
        out = ref.forward(
            x.numpy(), use_cache=True, positions=positions.numpy(), key_padding_mask=kpm
        )
        return torch.from_numpy(out)

    return step


def decode_error(case: Case, impl: str, pads=None, prefill=5, steps=4, start=0, seed=2):
    """Prefill `prefill` tokens, then decode `steps` one at a time, through transformers'
    DynamicCache and through ours; the worst relative error over the real query rows.
    pads: left padding per batch row (a 2-D attention_mask, position_ids = cumsum - 1)."""
    import torch_port.hf as tph

    rope = tph.config_of(case.layer).rope
    B = 2
    T = prefill + steps
    x, _ = inputs(B, T, seed)
    if pads is None:
        mask2d = None
        position_ids = (torch.arange(T) + start)[None].expand(B, T)
    else:
        mask2d, position_ids = left_padded(B, T, pads)
    cache = new_cache(case)
    ours = _ours(case, impl)
    bounds = [(0, prefill)] + [(t, t + 1) for t in range(prefill, T)]
    worst = 0.0
    for a, b in bounds:
        sub_mask = None if mask2d is None else mask2d[:, :b]
        chunk = x[:, a:b].contiguous()  # (B, b - a, d); GPT-2's Conv1D needs a contiguous view
        with torch.no_grad(), float64_transformers(case.family):
            ref = hf_forward(case, chunk, position_ids[:, a:b], rope, sub_mask, cache)
        kpm = None if sub_mask is None else sub_mask.bool()
        got = ours(chunk, position_ids[:, a:b], kpm)
        real = torch.ones(B, b - a, dtype=torch.bool) if mask2d is None else mask2d[:, a:b] == 1
        worst = max(worst, rel_err(got[real], ref[real]))
    return worst


def has_npattn(case: Case) -> bool:
    """Whether this npattn has the family's class (npattn.Attention, or LatentAttention)."""
    return hasattr(npattn, "LatentAttention" if case.family == "deepseek_v3" else "Attention")


def agreement(case: Case, impl: str) -> dict:
    """Every quantity in QUANTITIES: max relative error against transformers, float64."""
    errs = grad_errors(case, impl)
    errs["cached decoding"] = decode_error(case, impl)
    errs["left-padded decoding"] = decode_error(case, impl, pads=(0, 3))
    return errs
