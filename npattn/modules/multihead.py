"""The chapter's two multi-head classes (section 3.6).

Shape legend: B batch, T tokens, H = num_heads, E = head_dim, d_in / d_out as in the chapter.
MultiHeadAttentionWrapper: d_out is per head, output (B, T, H * d_out).
MultiHeadAttention: d_out is the total width, E = d_out // H, output (B, T, d_out).
"""

from __future__ import annotations

import numpy as np

from .. import _guard
from .._checks import as_grad, check_positive_int, make_rng
from ..ops.fused_linear import fused_linear_backward, fused_linear_forward
from ..ops.heads import (
    merge_heads_backward,
    merge_heads_forward,
    split_qkv_heads_backward,
    split_qkv_heads_forward,
)
from ._impl import AttnImpl, attention_backward, attention_forward, check_attn_impl, keep_mask
from ._input import chapter_mask, check_attention_args, prepare_input
from .attention import CausalAttention
from .base import Module, ModuleList
from .linear import Linear


class MultiHeadAttentionWrapper(Module):
    """num_heads CausalAttention heads side by side, outputs concatenated (chapter 3.6.1).

    Shapes: x (B, T, d_in) -> (B, T, num_heads * d_out).
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
        *,
        rng=None,
    ):
        super().__init__()
        d_in, d_out, context_length, dropout, _ = check_attention_args(
            d_in, d_out, context_length, dropout, qkv_bias=qkv_bias
        )
        num_heads = check_positive_int(num_heads, "num_heads")  # d_out is per head here
        self.d_in, self.d_out, self.num_heads = d_in, d_out, num_heads
        self.rng = make_rng(rng)
        self.heads = ModuleList(
            CausalAttention(d_in, d_out, context_length, dropout, qkv_bias, rng=self.rng)
            for _ in range(num_heads)
        )

    @property
    def attn_weights(self):
        """Each head's weights stacked on axis -3: (B, H, T, T)."""
        if any(h.attn_weights is None for h in self.heads):
            return None
        return np.stack([h.attn_weights for h in self.heads], axis=-3)

    def forward(self, x):
        outs = [head(x) for head in self.heads]  # H x (B, T, d_out)
        out = np.concatenate(outs, axis=-1)  # -> (B, T, H * d_out)
        self._cache = out.shape
        return out

    def backward(self, dout):
        out_shape = self._require_cache()
        dout = as_grad(dout, out_shape, self.dtype)
        douts = np.split(dout, self.num_heads, axis=-1)  # H x (B, T, d_out)
        dx = self.heads[0].backward(douts[0])
        for head, dh in zip(list(self.heads)[1:], douts[1:]):
            dx += head.backward(dh)  # x feeds every head
        return dx


class MultiHeadAttention(Module):
    """Multi-head attention with split weights, reshape/transpose and out_proj (chapter 3.6.2).

    Shapes: x (B, T, d_in), T <= context_length -> context_vec (B, T, d_out).

    Forward (walked backwards in `backward`):
        1. queries, keys, values = W_query(x), W_key(x), W_value(x), as one matrix product
                                                       (B, T, d_in) -> (B, T, 3 * d_out)
        2. split heads                                 (B, T, 3 * d_out) -> 3 x (B, H, T, E)
        3. causal SDPA with dropout on the weights     (B, H, T, E)
        4. merge heads                                 (B, H, T, E) -> (B, T, d_out)
        5. context_vec = out_proj(context)             (B, T, d_out)
    attn_impl: "naive", "tiled" or "auto" (npattn/modules/_impl.py); tiled sets attn_weights None.
    """

    attn_impl = AttnImpl()  # checked when set (npattn/modules/_impl.py)

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
        *,
        rng=None,
        attn_impl: str = "naive",
    ):
        super().__init__()
        self.attn_impl = check_attn_impl(attn_impl)
        self.d_in, self.d_out, self.context_length, self.dropout, self.num_heads = (
            check_attention_args(d_in, d_out, context_length, dropout, num_heads, qkv_bias)
        )
        self.head_dim = self.d_out // self.num_heads
        self.rng = make_rng(rng)
        self.W_query = Linear(d_in, d_out, bias=qkv_bias, rng=self.rng)
        self.W_key = Linear(d_in, d_out, bias=qkv_bias, rng=self.rng)
        self.W_value = Linear(d_in, d_out, bias=qkv_bias, rng=self.rng)
        self.out_proj = Linear(d_out, d_out, rng=self.rng)
        self.register_buffer("mask", chapter_mask(self.context_length))
        self.attn_weights = None

    def forward(self, x):
        x = prepare_input(x, self.d_in, self.dtype, self.context_length)
        # 1. projections, one GEMM                       (B, T, d_in) -> (B, T, 3 * d_out)
        qkv_layers = (self.W_query, self.W_key, self.W_value)
        biases = None if self.W_query.bias is None else [m.bias for m in qkv_layers]
        qkv, qkv_cache = fused_linear_forward(x, [m.weight for m in qkv_layers], biases)
        qkv = _guard.readonly(qkv)  # ours alone: the caches below keep its views, not copies
        # 2. split heads (views)                         (B, T, 3 * d_out) -> 3 x (B, H, T, E)
        (queries, keys, values), split_cache = split_qkv_heads_forward(qkv, self.num_heads)
        # 3. causal attention per head                   (B, H, T, E)
        dropout_p = self.dropout if self.training else 0.0
        context, sdpa_cache, self.attn_weights = attention_forward(
            self.attn_impl, queries, keys, values, self.mask, dropout_p, self.rng
        )  # attn_weights: (B, H, T, T) before dropout, or None from the tiled path
        # 4. merge heads                                 (B, H, T, E) -> (B, T, d_out)
        context, merge_cache = merge_heads_forward(_guard.readonly(context))  # ours alone
        # 5. output projection                           (B, T, d_out) -> (B, T, d_out)
        context_vec = self.out_proj(context)
        self._cache = (qkv_cache, split_cache, sdpa_cache, merge_cache)
        return context_vec

    @property
    def dropout_mask(self):
        """The keep-mask (True = kept) of the last forward: (B, H, T, T), or None."""
        return None if self._cache is None else keep_mask(self._cache[2])

    def backward(self, dcontext_vec):
        qkv_cache, split_cache, sdpa_cache, merge_cache = self._require_cache()
        # 5.
        dcontext = self.out_proj.backward(dcontext_vec)  # (B, T, d_out)
        # 4.
        dcontext = merge_heads_backward(dcontext, merge_cache)  # (B, H, T, E)
        # 3.
        dqueries, dkeys, dvalues = attention_backward(dcontext, sdpa_cache)  # (B, H, T, E) each
        # 2.
        dqkv = split_qkv_heads_backward(dqueries, dkeys, dvalues, split_cache)  # (B, T, 3 d_out)
        # 1. x feeds all three projections: the one GEMM sums their three terms of dx
        dx, dweights, dbiases = fused_linear_backward(dqkv, qkv_cache)
        for i, layer in enumerate((self.W_query, self.W_key, self.W_value)):
            layer._grads = {"weight": dweights[i]}
            if dbiases is not None:
                layer._grads["bias"] = dbiases[i]
        return dx

    def extra_repr(self) -> str:
        return (
            f"d_in={self.d_in}, d_out={self.d_out}, context_length={self.context_length}, "
            f"dropout={self.dropout}, num_heads={self.num_heads}"
        )
