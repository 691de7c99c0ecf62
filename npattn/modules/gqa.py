"""Grouped-query attention (GQA), the chapter 4 bonus class: H query heads share G key/value
heads, each key/value head serving a group of H // G query heads. G = 1 is multi-query
attention (MQA), G = H is multi-head attention.

A preset of npattn.Attention: the book's arguments become an AttentionConfig, and the steps
are Attention's (npattn/models/attention.py). Names, arguments, state_dict keys and numbers
are the book's class's.

Shape legend: B batch, T query tokens, S key tokens, H = num_heads, G = num_kv_groups,
E = head_dim = d_out // H, d_in / d_out as in the chapter.
"""

from __future__ import annotations

from .._checks import check_positive_int
from ..fast.dispatch import MODERN_ATTN_IMPLS
from ..models.attention import Attention
from ..models.config import AttentionConfig
from ._input import attn_impl_property, check_attention_args
from .presets import preset_property


class GroupedQueryAttention(Attention):
    """Causal grouped-query attention; out_proj (d_out -> d_out) has no bias.

    Shapes: x (B, T, d_in) -> context_vec (B, T, d_out); with x_kv (B, S, d_in) the keys and
    values come from x_kv (cross-attention, not causal), and backward returns (dx, dx_kv).

    The steps are npattn.Attention's with no RoPE, no QK-norm: projections, split heads,
    cache, causal mask & key padding, SDPA with each key/value head repeated for its group,
    merge heads, out_proj. attn_impl: "reference" (the default) or the opt-in "tiled"
    (memory linear in T; attn_weights and dropout_mask are None, and dropout draws its own
    masks). The KV-cache path (use_cache=True) runs forward only whatever attn_impl says.
    """

    attn_impl = attn_impl_property(MODERN_ATTN_IMPLS)  # npattn/fast/dispatch.py
    _projection_order = ("W_key", "W_value", "W_query", "out_proj")  # the book's order

    d_in = preset_property("hidden_size")
    d_out = preset_property("out_width")
    num_heads = preset_property("num_heads")
    num_kv_groups = preset_property("kv_heads")
    head_dim = preset_property("head_size")
    group_size = preset_property("group_size")
    dropout = preset_property("dropout", settable=True)

    def __init__(
        self,
        d_in: int,
        d_out: int,
        dropout: float,
        num_heads: int,
        num_kv_groups: int,
        qkv_bias: bool = False,
        *,
        rng=None,
        attn_impl: str = "reference",
    ):
        d_in, d_out, _, dropout, num_heads = check_attention_args(
            d_in, d_out, dropout=dropout, num_heads=num_heads, qkv_bias=qkv_bias
        )
        num_kv_groups = check_positive_int(num_kv_groups, "num_kv_groups")
        if num_heads % num_kv_groups:
            raise ValueError(
                f"num_heads ({num_heads}) must be divisible by num_kv_groups ({num_kv_groups})"
            )
        config = AttentionConfig(
            hidden_size=d_in, num_heads=num_heads, num_kv_heads=num_kv_groups,
            head_dim=d_out // num_heads, d_out=d_out, qkv_bias=qkv_bias, dropout=dropout,
        )  # fmt: skip
        super().__init__(config, rng=rng, attn_impl=attn_impl)

    def extra_repr(self) -> str:
        return (
            f"d_in={self.d_in}, d_out={self.d_out}, dropout={self.dropout}, "
            f"num_heads={self.num_heads}, num_kv_groups={self.num_kv_groups}"
        )
