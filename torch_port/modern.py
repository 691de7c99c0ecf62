"""The attention of today's open models, one class per file, gathered here:

- GroupedQueryAttention (gqa.py): shared key/value heads (MQA and MHA as special cases);
- MultiHeadLatentAttention (mla.py): keys and values from a small cached latent;
- MultiHeadAttentionWithSWA (swa.py): causal within a sliding window, bounded cache;
- Qwen3Attention (qwen3.py): GQA with QK-norm and RoPE (Llama 3 with qk_norm=False).

Each takes `dtype=None` (keyword-only), is initialised like nn.Linear, and decodes with a KV
cache: forward(x, use_cache=True), reset_cache(), ptr_current_pos, cache_nbytes
(kv_cache.py).
"""

from .gqa import GroupedQueryAttention
from .mla import MultiHeadLatentAttention
from .qwen3 import Qwen3Attention, RMSNorm
from .swa import MultiHeadAttentionWithSWA

MODERN_CLASSES = (
    "GroupedQueryAttention",
    "MultiHeadLatentAttention",
    "MultiHeadAttentionWithSWA",
    "Qwen3Attention",
)

__all__ = [
    "GroupedQueryAttention",
    "MODERN_CLASSES",
    "MultiHeadAttentionWithSWA",
    "MultiHeadLatentAttention",
    "Qwen3Attention",
    "RMSNorm",
]
