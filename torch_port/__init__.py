"""torch_port: the chapter's attention classes, the bonus notebook's variants and the
attention of today's open models (GQA, MLA, sliding window, Qwen3/Llama 3) as torch
nn.Modules with a KV cache, weight exchange with npattn, and a kit for testing your own attention.

    import torch_port
    mha = torch_port.MultiHeadAttention(d_in=3, d_out=4, context_length=6, dropout=0.0,
                                        num_heads=2)
    fast = torch_port.MHAPyTorchScaledDotProduct.from_mha(mha)   # same function
    ref = torch_port.to_npattn(mha)                               # npattn, same weights
    torch_port.assert_matches_reference(my_module, ref)           # the kit (needs hypothesis)

torch_port.testing (the kit) is imported on first use, so torch_port itself needs only torch,
numpy and npattn; the kit also needs hypothesis.
"""

from .convert import from_npattn, load_safetensors, save_safetensors, to_npattn
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

_KIT = ("assert_matches_reference", "find_mismatch", "compare", "ReferenceMismatchError")


def __getattr__(name: str):
    """Lazy access to torch_port.testing and its main functions (they import hypothesis)."""
    if name == "testing" or name in _KIT:
        import importlib

        testing = importlib.import_module(".testing", __name__)
        return testing if name == "testing" else getattr(testing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CausalAttention",
    "GroupedQueryAttention",
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
    "SelfAttention_v2",
    "assert_matches_reference",
    "compare",
    "find_mismatch",
    "from_npattn",
    "load_safetensors",
    "save_safetensors",
    "testing",
    "to_npattn",
]
