"""The chapter's classes, built from the ops in npattn.ops."""

from .attention import CausalAttention, SelfAttention_v1, SelfAttention_v2
from .base import Module, ModuleList
from .linear import Linear
from .multihead import MultiHeadAttention, MultiHeadAttentionWrapper

__all__ = [
    "CausalAttention",
    "Linear",
    "Module",
    "ModuleList",
    "MultiHeadAttention",
    "MultiHeadAttentionWrapper",
    "SelfAttention_v1",
    "SelfAttention_v2",
]
