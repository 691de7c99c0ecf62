"""torch_port: the chapter's attention classes, the bonus notebook's variants and the
attention of today's open models (GQA, MLA, sliding window, Qwen3/Llama 3, DeepSeek's latent
attention) as torch nn.Modules with a KV cache, weight exchange with npattn, and a kit for
testing your own attention.

    import torch_port
    mha = torch_port.MultiHeadAttention(d_in=3, d_out=4, context_length=6, dropout=0.0,
                                        num_heads=2)
    fast = torch_port.MHAPyTorchScaledDotProduct.from_mha(mha)   # same function
    ref = torch_port.to_npattn(mha)                               # npattn, same weights
    torch_port.assert_matches_reference(my_module, ref)           # the kit (needs hypothesis)

torch_port.Attention (a real model's attention layer, configured by an
npattn.AttentionConfig), torch_port.convert and torch_port.testing (the kit) are imported on
first use, so `import torch_port` (and torch_port.modules, torch_port.variants) needs torch
alone; Attention and conversion also need npattn, and the kit hypothesis too.
torch_port.hf (Hugging Face transformers' layers -> npattn / torch_port) is the one place that
imports transformers, also on first use.
"""

import importlib

from .latent import LatentAttention
from .modern import (
    GroupedQueryAttention,
    MultiHeadAttentionWithSWA,
    MultiHeadLatentAttention,
    Qwen3Attention,
    RMSNorm,
)
from .modules import (
    CausalAttention,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    SelfAttention_v1,
    SelfAttention_v2,
)
from .variants import (
    MHAEinsum,
    MHAPyTorchClass,
    MHAPyTorchFlexAttention,
    MHAPyTorchScaledDotProduct,
    MHAPyTorchSDPAWithoutFlash,
    MultiHeadAttentionCombinedQKV,
)

_LAZY = {  # submodule: the names it exports here; imported on first use
    "attention": ("Attention",),
    "hf": (),
    "convert": ("from_npattn", "load_safetensors", "save_safetensors", "to_npattn"),
    "testing": (
        "assert_matches_reference",
        "assert_decode_matches",
        "assert_sdpa_matches",
        "find_mismatch",
        "compare",
        "ReferenceMismatchError",
        "KitSetupError",
        "ConfigurationMismatchError",
    ),
}


def __getattr__(name: str):
    """Lazy access to torch_port.convert and torch_port.testing (they import npattn, and the
    kit hypothesis) and to their main functions."""
    for submodule, names in _LAZY.items():
        if name == submodule or name in names:
            module = importlib.import_module(f".{submodule}", __name__)
            return module if name == submodule else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Attention",
    "CausalAttention",
    "GroupedQueryAttention",
    "LatentAttention",
    "MHAEinsum",
    "MHAPyTorchClass",
    "MHAPyTorchFlexAttention",
    "MHAPyTorchSDPAWithoutFlash",
    "MHAPyTorchScaledDotProduct",
    "MultiHeadAttention",
    "MultiHeadAttentionCombinedQKV",
    "MultiHeadAttentionWithSWA",
    "MultiHeadAttentionWrapper",
    "MultiHeadLatentAttention",
    "Qwen3Attention",
    "RMSNorm",
    "SelfAttention_v1",
    "ReferenceMismatchError",
    "KitSetupError",
    "ConfigurationMismatchError",
    "assert_decode_matches",
    "assert_sdpa_matches",
    "SelfAttention_v2",
    "assert_matches_reference",
    "compare",
    "convert",
    "find_mismatch",
    "from_npattn",
    "load_safetensors",
    "save_safetensors",
    "testing",
    "to_npattn",
]
