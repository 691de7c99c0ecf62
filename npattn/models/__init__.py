"""The attention layers of real models: one configurable Attention (and DeepSeek's latent
attention), built from the same ops and modules as the chapter's classes."""

# npattn.modules first: its bonus classes are presets of Attention and import it, while
# Attention imports the modules' building blocks (Module, Linear, RMSNorm, the KV cache)
from .. import modules as _modules  # noqa: F401, I001
from .attention import Attention
from .config import AttentionConfig, QKNorm
from .latent import LatentAttention
from .latent_config import LatentConfig

__all__ = ["Attention", "AttentionConfig", "LatentAttention", "LatentConfig", "QKNorm"]
