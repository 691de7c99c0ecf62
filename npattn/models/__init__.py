"""The attention layers of real models: one configurable Attention (and DeepSeek's latent
attention), built from the same ops as the chapter's classes."""

from .config import AttentionConfig, QKNorm
from .latent import LatentAttention
from .latent_config import LatentConfig

__all__ = ["AttentionConfig", "LatentAttention", "LatentConfig", "QKNorm"]
