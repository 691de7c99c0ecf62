"""The chapter's classes and the modern ones (GQA, MLA, SWA, Qwen3), built from the ops."""

from .base import Module, ModuleList
from .gqa import GroupedQueryAttention
from .linear import Linear
from .mla import MultiHeadLatentAttention
from .multihead import MultiHeadAttention, MultiHeadAttentionWrapper
from .qwen3 import Qwen3Attention
from .rmsnorm import RMSNorm
from .self_attention import CausalAttention, SelfAttention_v1, SelfAttention_v2
from .swa import MultiHeadAttentionWithSWA

__all__ = [
    "CausalAttention",
    "GroupedQueryAttention",
    "Linear",
    "Module",
    "ModuleList",
    "MultiHeadAttention",
    "MultiHeadAttentionWithSWA",
    "MultiHeadAttentionWrapper",
    "MultiHeadLatentAttention",
    "Qwen3Attention",
    "RMSNorm",
    "SelfAttention_v1",
    "SelfAttention_v2",
]
