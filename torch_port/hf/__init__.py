"""Hugging Face transformers' attention layers as npattn / torch_port layers: same settings,
same weights, the same function.

    layer = model.model.layers[0].self_attn          # e.g. a LlamaAttention
    ref = torch_port.hf.to_npattn(layer)              # npattn.Attention, float64 weights
    mirror = torch_port.hf.to_torch(layer)            # torch_port.Attention, the layer's dtype
    torch_port.hf.config_of(layer)                    # the npattn.AttentionConfig
    torch_port.hf.weight_map(layer)                   # {transformers name: tensor} -> npattn's

The layer does not hold RoPE's tables or the causal mask (the model computes both and passes
them in): the npattn layer computes them itself from its config, at the positions given to
its forward. This package is the only part of npattn and torch_port that names transformers'
classes; the functions read the layer's attributes and never import transformers themselves.
"""

from __future__ import annotations

import numpy as np
import torch

from .families import UnsupportedLayerError, config_of, family_of, supported_families
from .weights import weight_map

SUPPORTED_FAMILIES = tuple(supported_families())


def _mapped(layer) -> dict:
    params = dict(layer.named_parameters())
    with torch.no_grad():
        return weight_map(layer)(params)


def to_npattn(layer, dtype=np.float64):
    """npattn.Attention (or LatentAttention for DeepSeek-V3) with the layer's settings and its
    weights cast to `dtype` (float64 by default), in the layer's train/eval mode."""
    import npattn

    config = config_of(layer)
    cls = npattn.LatentAttention if family_of(layer) == "deepseek_v3" else npattn.Attention
    new = cls(config).astype(dtype)
    sd = {k: v.detach().cpu().to(torch.float64).numpy() for k, v in _mapped(layer).items()}
    new.load_state_dict(sd)  # strict: every key and shape; values take `dtype`
    return new.train(layer.training)


def to_torch(layer):
    """torch_port.Attention (or LatentAttention) with the layer's settings and weights, on the
    layer's device and in its dtype and train/eval mode."""
    import torch_port

    config = config_of(layer)
    name = "LatentAttention" if family_of(layer) == "deepseek_v3" else "Attention"
    weight = next(layer.parameters())
    new = getattr(torch_port, name)(config, dtype=weight.dtype).to(weight.device)
    new.load_state_dict(_mapped(layer))  # strict about keys and shapes
    return new.train(layer.training)


__all__ = [
    "SUPPORTED_FAMILIES",
    "UnsupportedLayerError",
    "config_of",
    "to_npattn",
    "to_torch",
    "weight_map",
]
