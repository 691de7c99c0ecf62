"""The attention layers of real models: one configurable Attention (and DeepSeek's latent
attention), built from the same ops as the chapter's classes."""

from .attention import Attention
from .config import AttentionConfig, QKNorm

__all__ = ["Attention", "AttentionConfig", "QKNorm"]
