"""Multi-head attention with a sliding window (Gemma, Mistral), the chapter 4 bonus class:
query position i attends key position j when 0 <= i - j < W, W = sliding_window_size.

A preset of npattn.Attention (npattn/models/attention.py): the book's arguments become an
AttentionConfig with a window. Names, arguments, state_dict keys and numbers are the book's.

Shape legend: B batch, T query tokens, S key tokens, H = num_heads, E = head_dim = d_out // H,
W = sliding_window_size (None: plain causal).
"""

from __future__ import annotations

from ..fast.dispatch import MODERN_ATTN_IMPLS
from ..models.attention import Attention
from ..models.config import AttentionConfig
from ._input import attn_impl_property, check_attention_args
from .presets import preset_property


class MultiHeadAttentionWithSWA(Attention):
    """The chapter's MultiHeadAttention with a sliding-window causal mask and no mask buffer.

    Shapes: x (B, T, d_in) -> context_vec (B, T, d_out).

    The steps are npattn.Attention's with a window W: projections, split heads, cache (the
    last W positions are kept after each call, and a chunk of T tokens attends to at most
    W + T - 1 keys), the mask 0 <= i - j < W & key padding, SDPA with dropout on the
    weights, merge heads, out_proj (with its bias, as in the chapter).
    attn_impl: "reference" (the default) or the opt-in "tiled", which skips the tiles wholly
    outside the window and forms no (T, S) array: memory linear in T, and time too for a
    fixed W. The KV-cache path (use_cache=True) runs forward only whatever attn_impl says.
    """

    attn_impl = attn_impl_property(MODERN_ATTN_IMPLS)  # npattn/fast/dispatch.py

    d_in = preset_property("hidden_size")
    d_out = preset_property("out_width")
    num_heads = preset_property("num_heads")
    head_dim = preset_property("head_size")
    dropout = preset_property("dropout", settable=True)
    sliding_window_size = preset_property("window", settable=True, name="sliding_window_size")

    def __init__(
        self,
        d_in: int,
        d_out: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
        sliding_window_size: int | None = None,
        *,
        rng=None,
        attn_impl: str = "reference",
    ):
        d_in, d_out, _, dropout, num_heads = check_attention_args(
            d_in, d_out, dropout=dropout, num_heads=num_heads, qkv_bias=qkv_bias
        )
        try:
            config = AttentionConfig(
                hidden_size=d_in, num_heads=num_heads, head_dim=d_out // num_heads,
                d_out=d_out, qkv_bias=qkv_bias, out_bias=True, dropout=dropout,
                window=sliding_window_size,
            )  # fmt: skip
        except (TypeError, ValueError) as e:  # the window is the book's sliding_window_size
            raise type(e)(str(e).replace("window", "sliding_window_size", 1)) from None
        super().__init__(config, rng=rng, attn_impl=attn_impl)

    def extra_repr(self) -> str:
        return (
            f"d_in={self.d_in}, d_out={self.d_out}, dropout={self.dropout}, "
            f"num_heads={self.num_heads}, sliding_window_size={self.sliding_window_size}"
        )
