"""torch_port: the chapter's attention classes and the bonus notebook's variants as torch
nn.Modules, weight exchange with npattn, and a kit for testing your own attention.

    import torch_port
    mha = torch_port.MultiHeadAttention(d_in=3, d_out=4, context_length=6, dropout=0.0,
                                        num_heads=2)
    fast = torch_port.MHAPyTorchScaledDotProduct.from_mha(mha)   # same function
    ref = torch_port.to_npattn(mha)                               # npattn, same weights
"""

from .convert import from_npattn, load_safetensors, save_safetensors, to_npattn
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

__all__ = [
    "CausalAttention",
    "MHAEinsum",
    "MHAPyTorchClass",
    "MHAPyTorchFlexAttention",
    "MHAPyTorchSDPAWithoutFlash",
    "MHAPyTorchScaledDotProduct",
    "MultiHeadAttention",
    "MultiHeadAttentionCombinedQKV",
    "MultiHeadAttentionWrapper",
    "SelfAttention_v1",
    "SelfAttention_v2",
    "from_npattn",
    "load_safetensors",
    "save_safetensors",
    "to_npattn",
]
