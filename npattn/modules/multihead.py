"""The chapter's two multi-head classes (section 3.6).

Shape legend: B batch, T tokens, S key tokens (cached ones included), H = num_heads,
E = head_dim, d_in / d_out as in the chapter.
MultiHeadAttentionWrapper: d_out is per head, output (B, T, H * d_out).
MultiHeadAttention: d_out is the total width, E = d_out // H, output (B, T, d_out); it also
decodes with the KV cache of the book's chapter 4 bonus (forward(x, use_cache=True)).
"""

from __future__ import annotations

import numpy as np

from .. import _guard
from .._checks import as_grad, check_positive_int, make_rng
from ..fast.dispatch import (
    fused_attention_backward,
    fused_attention_forward,
    keep_mask,
    resolve_attn_impl,
)
from ..fast.fused_linear import fused_layers_backward, fused_layers_forward
from ..ops.heads import (
    merge_heads_backward,
    merge_heads_forward,
    split_heads_backward,
    split_heads_forward,
)
from ..ops.sdpa import sdpa_backward, sdpa_forward
from ._input import (
    attend_mask,
    attn_impl_property,
    chapter_mask,
    check_attention_args,
    prepare_input,
)
from ._kv import CacheView, KVCacheMixin, check_scores
from .base import Module, ModuleList
from .linear import Linear
from .self_attention import CausalAttention


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


class MultiHeadAttention(KVCacheMixin, Module):
    """Multi-head attention with split weights, reshape/transpose and out_proj (chapter 3.6.2).

    Shapes: x (B, T, d_in), T <= context_length -> context_vec (B, T, d_out).

    Forward (walked backwards in `backward`):
        1. queries, keys, values = W_query(x), W_key(x), W_value(x)   (B, T, d_out)
        2. split heads                                 (B, T, d_out) -> (B, H, T, E)
        3. sdpa with the causal mask buffer, dropout on the weights   (B, H, T, E)
        4. merge heads                                 (B, H, T, E) -> (B, T, d_out)
        5. context_vec = out_proj(context)             (B, T, d_out)
    attn_impl: "reference" (the default: the steps above), or the opt-in "blocked", "tiled" or
    "auto", which run steps 1-4 as one GEMM and a faster attention (npattn/fast/dispatch.py),
    and step 5 on the same op; "tiled" sets attn_weights to None. There W_query, W_key,
    W_value and out_proj run no forward of their own (each forgets its last one, so its own
    backward raises): their gradients are handed to them with Linear.set_grads.

    KV cache (the book's chapter 4 bonus): forward(x, use_cache=True) appends this chunk's
    keys and values to cache_k, cache_v (B, H, S_cached, E) and attends from positions
    ptr_current_pos .. ptr_current_pos + T - 1, which must stay below context_length; the
    chunk's rows of the mask buffer say which keys it sees. That path is inference: it runs
    steps 1-2, then 3-5 forward only (KVCacheMixin), whatever attn_impl says. forward(x) is
    the full forward and empties the cache; reset_cache() empties it.
    """

    attn_impl = attn_impl_property()  # npattn/fast/dispatch.py
    _custom_mask = True  # one-token cached calls read the mask buffer too: it may be changed
    cache_k, cache_v = CacheView(0), CacheView(1)  # (B, H, S_cached, E), read-only views

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
        attn_impl: str = "reference",
    ):
        super().__init__()
        self.attn_impl = attn_impl
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
        self.reset_cache()

    def _kv_limits(self) -> tuple:
        return None, self.context_length  # positions never exceed context_length

    def reset_cache(self) -> None:
        """Empty the cache: no cached positions, ptr_current_pos = 0."""
        super().reset_cache()
        self._cached_keep = None  # the keep-mask of the last cached call

    def forward(self, x, use_cache: bool = False):
        x = prepare_input(x, self.d_in, self.dtype, self.context_length)
        (B, T, _), H = x.shape, self.num_heads
        if self._check_call(B, use_cache, None):
            return self._forward_cached(x)
        dropout_p = self.dropout if self.training else 0.0
        impl = resolve_attn_impl(self.attn_impl, T, B * H)
        if impl == "reference":
            check_scores(B, H, T, T, x.dtype)  # before anything is computed
        if impl != "reference":  # opt-in speed: npattn/fast/dispatch.py
            return self._forward_fast(impl, x, dropout_p)
        # 1. projections                                 (B, T, d_in) -> (B, T, d_out)
        queries = self.W_query(x)
        keys = self.W_key(x)
        values = self.W_value(x)
        # 2. split heads                                 (B, T, d_out) -> (B, H, T, E)
        queries, split_cache = split_heads_forward(queries, H)
        keys, _ = split_heads_forward(keys, H)
        values, _ = split_heads_forward(values, H)
        # 3. attention per head, the buffer as a mask    (B, H, T, E)
        mask = attend_mask(self.mask, T)  # (T, T), True = attend
        context, sdpa_cache = sdpa_forward(queries, keys, values, mask, dropout_p, rng=self.rng)
        # 4. merge heads                                 (B, H, T, E) -> (B, T, d_out)
        context, merge_cache = merge_heads_forward(_guard.readonly(context))  # ours alone
        # 5. output projection                           (B, T, d_out) -> (B, T, d_out)
        context_vec = self.out_proj(context)
        self.attn_weights = sdpa_cache.attn_weights  # (B, H, T, T), before dropout
        self.reset_cache()  # a full forward empties the KV cache
        self._cache = (impl, sdpa_cache, (split_cache, merge_cache))
        return context_vec

    def backward(self, dcontext_vec):
        impl, sdpa_cache, caches = self._require_full_forward()
        if impl != "reference":
            return self._backward_fast(dcontext_vec, caches)
        split_cache, merge_cache = caches
        # 5.
        dcontext = self.out_proj.backward(dcontext_vec)  # (B, T, d_out)
        # 4.
        dcontext = merge_heads_backward(dcontext, merge_cache)  # (B, H, T, E)
        # 3.
        dqueries, dkeys, dvalues = sdpa_backward(dcontext, sdpa_cache)  # (B, H, T, E) each
        # 2.
        dqueries = split_heads_backward(dqueries, split_cache)  # (B, T, d_out)
        dkeys = split_heads_backward(dkeys, split_cache)
        dvalues = split_heads_backward(dvalues, split_cache)
        # 1. x feeds all three projections, so dx sums three terms
        dx = self.W_query.backward(dqueries)
        dx += self.W_key.backward(dkeys)
        dx += self.W_value.backward(dvalues)
        return dx

    def _forward_fast(self, impl, x, dropout_p):
        """Steps 1-4 fused ("blocked" or "tiled": npattn/fast/dispatch.py), then step 5.

        out_proj runs on the same split product as the fused projections (fast/fused_linear.py)
        and is handed its gradients in the backward, like W_query, W_key and W_value.
        """
        qkv_layers = (self.W_query, self.W_key, self.W_value)
        context, fast_cache, attn_weights = fused_attention_forward(
            impl, x, qkv_layers, self.num_heads, self.mask, dropout_p, self.rng
        )  # context (B, T, d_out); attn_weights (B, H, T, T) or None from the tiled path
        (context_vec,), out_cache = fused_layers_forward(context, (self.out_proj,))
        for layer in qkv_layers:
            layer.forget_forward()  # computed here, not by the layer: no backward of its own
        self.attn_weights = attn_weights
        self.reset_cache()  # a full forward empties the KV cache
        self._cache = (impl, fast_cache.attention, (fast_cache, out_cache))
        return context_vec

    def _forward_cached(self, x):
        """Steps 1-2 for this chunk, then the cache and steps 3-5 forward only.

        Shapes: x (B, T, d_in) at positions ptr_current_pos .. -> context_vec (B, T, d_out).
        """
        start, T, H = self.ptr_current_pos, x.shape[1], self.num_heads
        check_scores(x.shape[0], H, T, start + T, x.dtype)
        if start + T > self.context_length:
            raise ValueError(
                f"positions {start}..{start + T - 1} run past context_length="
                f"{self.context_length}: x has {T} tokens after {start} cached ones"
            )
        # 1. projections                                 (B, T, d_in) -> (B, T, d_out)
        queries = self.W_query(x)
        keys = self.W_key(x)
        values = self.W_value(x)
        # 2. split heads                                 (B, T, d_out) -> (B, H, T, E)
        queries, _ = split_heads_forward(queries, H)
        keys, _ = split_heads_forward(keys, H)
        values, _ = split_heads_forward(values, H)
        # 3.-5. the chunk joins the cache: (B, H, start, E) + (B, H, T, E) -> (B, H, S, E)
        return self._attend_cached(queries, *self._kv.stage(keys, values))

    def _cached_mask(self, q_start: int, T: int, S: int):
        """The mask buffer's rows q_start .. q_start + T - 1, as the book slices it.

        Shapes: -> (T, S = q_start + T), True = attend.
        """
        return self.mask[q_start : q_start + T, :S] == 0

    def _backward_fast(self, dcontext_vec, fast_cache):
        """Step 5, then steps 4 -> 1 fused; each projection is handed its own gradients."""
        fast_cache, out_cache = fast_cache
        dcontext = fused_layers_backward(dcontext_vec, out_cache, (self.out_proj,))  # (B, T, d_out)
        dx, dweights, dbiases = fused_attention_backward(dcontext, fast_cache)
        dbiases = dbiases if dbiases is not None else (None,) * 3
        for layer, dweight, dbias in zip(
            (self.W_query, self.W_key, self.W_value), dweights, dbiases
        ):
            layer.set_grads(dweight, dbias)
        return dx

    @property
    def dropout_mask(self):
        """The keep-mask (True = kept) of the last forward: (B, H, T, S), or None."""
        if self._cache is None:  # after a cached call (or before any forward)
            return self._cached_keep
        return keep_mask(self._cache[1])

    @dropout_mask.setter
    def dropout_mask(self, keep) -> None:  # set by a cached call (KVCacheMixin._cached_sdpa)
        self._cached_keep = keep

    def extra_repr(self) -> str:
        return (
            f"d_in={self.d_in}, d_out={self.d_out}, context_length={self.context_length}, "
            f"dropout={self.dropout}, num_heads={self.num_heads}"
        )
