"""npattn: the attention of chapter 3 of *Build a Large Language Model (From Scratch)* in
plain NumPy, every stage with a hand-written backward pass.

    import npattn
    from npattn import functional as F

    mha = npattn.MultiHeadAttention(d_in=3, d_out=4, context_length=6, dropout=0.0,
                                    num_heads=2, rng=123)
    y = mha(x)            # (B, T, 3) -> (B, T, 4)
    dx = mha.backward(dy) # and mha.grads holds every parameter gradient
"""

from . import functional, gradcheck
from ._grad import is_grad_enabled, no_grad
from .models import Attention, AttentionConfig, LatentAttention, LatentConfig, QKNorm
from .modules import (
    CausalAttention,
    GroupedQueryAttention,
    Linear,
    Module,
    MultiHeadAttention,
    MultiHeadAttentionWithSWA,
    MultiHeadAttentionWrapper,
    MultiHeadLatentAttention,
    Qwen3Attention,
    RMSNorm,
    SelfAttention_v1,
    SelfAttention_v2,
)
from .ops.rope_config import DynamicNTK, LinearScaling, Llama3, RoPE, YaRN
from .ops.simple import simple_self_attention

__version__ = "0.1.0"

__all__ = [
    "Attention",
    "AttentionConfig",
    "CausalAttention",
    "DynamicNTK",
    "GroupedQueryAttention",
    "LatentAttention",
    "LatentConfig",
    "Linear",
    "LinearScaling",
    "Llama3",
    "Module",
    "MultiHeadAttention",
    "MultiHeadAttentionWithSWA",
    "MultiHeadAttentionWrapper",
    "MultiHeadLatentAttention",
    "QKNorm",
    "Qwen3Attention",
    "RMSNorm",
    "RoPE",
    "SelfAttention_v1",
    "SelfAttention_v2",
    "YaRN",
    "functional",
    "gradcheck",
    "is_grad_enabled",
    "no_grad",
    "simple_self_attention",
]
