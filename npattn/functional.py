"""The public face of the ops: `from npattn import functional as F`.

Every op is a pure pair, `*_forward(...) -> (out, cache)` and `*_backward(dout, cache)`, except
softmax, whose output is its own cache: `y = F.softmax(x)`, `dx = F.softmax_backward(dy, y)`.

A backward always uses the data of the forward that made its cache. Torch keeps references
and raises ("modified by an inplace operation") when one changes; npattn makes the change
impossible instead (npattn/_guard.py): a cache keeps a private copy of each array the caller
still holds (x, q, k, v, weights, masks, and an output the cache also needs), so editing any of
them in place before the backward changes no gradient, and every array a cache keeps or shows
(cache.attn_weights, a module's attn_weights) is read-only. The copies run at memory speed
(docs/safety.md). Softmax is the exception that proves the rule: its cache is its
output y, which the caller holds, and softmax_backward(dy, y) is a function of the y it gets.
Inputs themselves are never modified by npattn.
"""

from .ops.causal import CausalCache, causal_sdpa_backward, causal_sdpa_forward
from .ops.dropout import dropout_backward, dropout_forward, dropout_keep_mask
from .ops.fused_linear import fused_linear_backward, fused_linear_forward
from .ops.heads import (
    merge_heads_backward,
    merge_heads_forward,
    split_heads_backward,
    split_heads_forward,
    split_qkv_heads_backward,
    split_qkv_heads_forward,
)
from .ops.linear import linear_backward, linear_forward
from .ops.masks import (
    causal_mask,
    mask_renormalize_backward,
    mask_renormalize_forward,
    mask_scores_backward,
    mask_scores_forward,
)
from .ops.sdpa import SDPACache, scaled_dot_product_attention, sdpa_backward, sdpa_forward
from .ops.simple import (
    attn_scores_for_query,
    attn_scores_loops,
    context_vector_for_query,
    context_vectors_loops,
    simple_attention_backward,
    simple_attention_forward,
    simple_self_attention,
)
from .ops.softmax import softmax, softmax_backward, softmax_inplace, softmax_naive
from .ops.tiled import (
    FlashCache,
    flash_attention_backward,
    flash_attention_forward,
    flash_dropout_mask,
)

__all__ = [
    "CausalCache",
    "FlashCache",
    "SDPACache",
    "attn_scores_for_query",
    "attn_scores_loops",
    "causal_mask",
    "causal_sdpa_backward",
    "causal_sdpa_forward",
    "context_vector_for_query",
    "context_vectors_loops",
    "dropout_backward",
    "dropout_forward",
    "dropout_keep_mask",
    "flash_attention_backward",
    "flash_attention_forward",
    "flash_dropout_mask",
    "fused_linear_backward",
    "fused_linear_forward",
    "linear_backward",
    "linear_forward",
    "mask_renormalize_backward",
    "mask_renormalize_forward",
    "mask_scores_backward",
    "mask_scores_forward",
    "merge_heads_backward",
    "merge_heads_forward",
    "scaled_dot_product_attention",
    "sdpa_backward",
    "sdpa_forward",
    "simple_attention_backward",
    "simple_attention_forward",
    "simple_self_attention",
    "softmax",
    "softmax_backward",
    "softmax_inplace",
    "softmax_naive",
    "split_heads_backward",
    "split_heads_forward",
    "split_qkv_heads_backward",
    "split_qkv_heads_forward",
]
