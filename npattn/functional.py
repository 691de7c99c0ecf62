"""The public face of the ops: `from npattn import functional as F`.

Every op is a pure pair, `*_forward(...) -> (out, cache)` and `*_backward(dout, cache)`, except
softmax, whose output is its own cache: `y = F.softmax(x)`, `dx = F.softmax_backward(dy, y)`,
and GQA's head repetition: `F.repeat_kv(k, groups)`, `F.repeat_kv_backward(dk, groups)`.

The reference ops live in npattn/ops/; the opt-in fast ones in npattn/fast/ (causal_sdpa_*
by row blocks, fused_linear_*, flash_attention_* by tiles) are exported here too, so one
`F` reaches them all and tests can hold each fast op against its reference.

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

from .fast.blocked import CausalCache, causal_sdpa_backward, causal_sdpa_forward
from .fast.fused_linear import fused_linear_backward, fused_linear_forward
from .fast.tiled import (
    FlashCache,
    flash_attention_backward,
    flash_attention_forward,
    flash_dropout_mask,
)
from .ops.dropout import dropout_backward, dropout_forward, dropout_keep_mask
from .ops.heads import (
    merge_heads_backward,
    merge_heads_forward,
    repeat_kv,
    repeat_kv_backward,
    split_heads_backward,
    split_heads_forward,
    split_qkv_heads_backward,
    split_qkv_heads_forward,
)
from .ops.linear import linear_backward, linear_forward
from .ops.masks import (
    causal_mask,
    key_padding_mask,
    mask_renormalize_backward,
    mask_renormalize_forward,
    mask_scores_backward,
    mask_scores_forward,
    position_mask,
    sliding_window_mask,
)
from .ops.rmsnorm import rmsnorm_backward, rmsnorm_forward
from .ops.rope import (
    compute_rope_params,
    rope_apply_backward,
    rope_apply_forward,
    rope_backward,
    rope_forward,
    rotate_half,
    rotate_pairs,
)
from .ops.rope_config import DynamicNTK, LinearScaling, Llama3, RoPE, YaRN
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
from .ops.sinks import softmax_with_sink_backward, softmax_with_sink_forward
from .ops.softcap import softcap_backward, softcap_forward
from .ops.softmax import softmax, softmax_backward, softmax_inplace, softmax_naive

__all__ = [
    "CausalCache",
    "DynamicNTK",
    "FlashCache",
    "LinearScaling",
    "Llama3",
    "RoPE",
    "SDPACache",
    "YaRN",
    "attn_scores_for_query",
    "attn_scores_loops",
    "causal_mask",
    "causal_sdpa_backward",
    "causal_sdpa_forward",
    "compute_rope_params",
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
    "key_padding_mask",
    "linear_backward",
    "linear_forward",
    "mask_renormalize_backward",
    "mask_renormalize_forward",
    "mask_scores_backward",
    "mask_scores_forward",
    "merge_heads_backward",
    "merge_heads_forward",
    "position_mask",
    "rmsnorm_backward",
    "rmsnorm_forward",
    "rope_apply_backward",
    "rope_apply_forward",
    "rope_backward",
    "rope_forward",
    "rotate_half",
    "rotate_pairs",
    "repeat_kv",
    "repeat_kv_backward",
    "scaled_dot_product_attention",
    "sdpa_backward",
    "sdpa_forward",
    "simple_attention_backward",
    "simple_attention_forward",
    "simple_self_attention",
    "sliding_window_mask",
    "softcap_backward",
    "softcap_forward",
    "softmax",
    "softmax_backward",
    "softmax_inplace",
    "softmax_naive",
    "softmax_with_sink_backward",
    "softmax_with_sink_forward",
    "split_heads_backward",
    "split_heads_forward",
    "split_qkv_heads_backward",
    "split_qkv_heads_forward",
]
