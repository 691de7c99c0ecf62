"""The chapter's single-head classes: SelfAttention_v1, SelfAttention_v2, CausalAttention.

Shape legend: B batch, T tokens, d_in input width, d_out = d_k the query/key/value width.
x may be (T, d_in), as in the chapter's sections 3.4, or (B, T, d_in).
"""

from __future__ import annotations

import numpy as np

from .._checks import make_rng
from ..fast.dispatch import attention_backward, attention_forward, keep_mask, resolve_attn_impl
from ..ops.linear import linear_backward, linear_forward
from ..ops.sdpa import sdpa_backward, sdpa_forward
from ._input import (
    attend_mask,
    attn_impl_property,
    chapter_mask,
    check_attention_args,
    prepare_input,
)
from .base import Module
from .linear import Linear


class SelfAttention_v1(Module):
    """Self-attention with raw weight matrices, x @ W (chapter 3.4.2).

    Shapes: x (..., T, d_in) -> context_vec (..., T, d_out); W_* (d_in, d_out), as the chapter
    writes them (torch.rand initialisation: U[0, 1)).
    """

    def __init__(self, d_in: int, d_out: int, *, rng=None):
        super().__init__()
        self.d_in, self.d_out, *_ = check_attention_args(d_in, d_out)
        self.rng = make_rng(rng)
        for name in ("W_query", "W_key", "W_value"):
            self.register_parameter(name, self.rng.random((d_in, d_out)).astype(np.float32))
        self.attn_weights = None

    def forward(self, x):
        x = prepare_input(x, self.d_in, self.dtype)
        # 1. keys = x @ W_key etc.: linear with weight W.T     (..., T, d_in) -> (..., T, d_out)
        queries, cq = linear_forward(x, self.W_query.T)
        keys, ck = linear_forward(x, self.W_key.T)
        values, cv = linear_forward(x, self.W_value.T)
        # 2-4. softmax(queries @ keys.T / sqrt(d_k)) @ values   (..., T, d_out)
        context_vec, ca = sdpa_forward(queries, keys, values)
        self.attn_weights = ca.attn_weights  # (..., T, T)
        self._cache = (cq, ck, cv, ca)
        return context_vec

    def backward(self, dcontext_vec):
        cq, ck, cv, ca = self._require_cache()
        # 2-4.
        dqueries, dkeys, dvalues = sdpa_backward(dcontext_vec, ca)
        # 1. x feeds queries, keys and values, so dx sums three terms
        dx, dWq_T, _ = linear_backward(dqueries, cq)
        dx_k, dWk_T, _ = linear_backward(dkeys, ck)
        dx_v, dWv_T, _ = linear_backward(dvalues, cv)
        dx += dx_k
        dx += dx_v
        self._grads = {"W_query": dWq_T.T, "W_key": dWk_T.T, "W_value": dWv_T.T}
        return dx


class _QKV(Module):
    """Shared body of SelfAttention_v2 and CausalAttention: three Linear layers + SDPA.

    Forward (walked backwards in `backward`):
        1. queries, keys, values = W_query(x), W_key(x), W_value(x)      (..., T, d_out)
        2-5. sdpa: scores scaled by 1/sqrt(d_k), mask, softmax, dropout, @ values
    """

    attn_impl = attn_impl_property()  # npattn/fast/dispatch.py

    def _init_qkv(self, d_in, d_out, qkv_bias, rng, attn_impl="reference"):
        self.rng = make_rng(rng)
        self.attn_impl = attn_impl
        self.W_query = Linear(d_in, d_out, bias=qkv_bias, rng=self.rng)
        self.W_key = Linear(d_in, d_out, bias=qkv_bias, rng=self.rng)
        self.W_value = Linear(d_in, d_out, bias=qkv_bias, rng=self.rng)
        self.attn_weights = None

    def _attend(self, x, mask_buffer=None, dropout_p=0.0):
        # 1. queries, keys, values = W_query(x), W_key(x), W_value(x)   (..., T, d_out)
        queries = self.W_query(x)
        keys = self.W_key(x)
        values = self.W_value(x)
        T, batch = x.shape[-2], x.shape[0] if x.ndim == 3 else 1
        impl = resolve_attn_impl(self.attn_impl, T, batch)
        if impl != "reference":  # opt-in speed: npattn/fast/dispatch.py
            context_vec, cache, self.attn_weights = attention_forward(
                impl, queries, keys, values, mask_buffer, dropout_p, self.rng
            )
            self._cache = (impl, cache)
            return context_vec
        # 2-5. softmax(queries @ keys^T / sqrt(d_k), masked) with dropout, @ values
        mask = None if mask_buffer is None else attend_mask(mask_buffer, T)  # (T, T), True = attend
        context_vec, cache = sdpa_forward(queries, keys, values, mask, dropout_p, rng=self.rng)
        self.attn_weights = cache.attn_weights  # (..., T, T), before dropout
        self._cache = (impl, cache)
        return context_vec

    @property
    def dropout_mask(self):
        """The keep-mask (True = kept) of the last forward: (..., T, T), or None without
        dropout. Pass it to torch's math SDPA (tests/test_agreement.py) to reproduce a step."""
        return None if self._cache is None else keep_mask(self._cache[1])

    def backward(self, dcontext_vec):
        impl, cache = self._require_cache()
        # 2-5.
        if impl == "reference":
            dqueries, dkeys, dvalues = sdpa_backward(dcontext_vec, cache)
        else:
            dqueries, dkeys, dvalues = attention_backward(dcontext_vec, cache)
        # 1. x feeds all three projections, so dx sums three terms
        dx = self.W_query.backward(dqueries)
        dx += self.W_key.backward(dkeys)
        dx += self.W_value.backward(dvalues)
        return dx


class SelfAttention_v2(_QKV):
    """Self-attention with nn.Linear projections and optional qkv_bias (chapter 3.4.2).

    Shapes: x (..., T, d_in) -> context_vec (..., T, d_out).
    """

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False, *, rng=None):
        super().__init__()
        self.d_in, self.d_out, *_ = check_attention_args(d_in, d_out, qkv_bias=qkv_bias)
        self._init_qkv(d_in, d_out, qkv_bias, rng)

    def forward(self, x):
        return self._attend(prepare_input(x, self.d_in, self.dtype))


class CausalAttention(_QKV):
    """Causal self-attention with dropout on the weights (chapter 3.5.3).

    Shapes: x (B, T, d_in), T <= context_length -> context_vec (B, T, d_out).
    The `mask` buffer is the chapter's triu(ones, 1) (1 = masked), truncated to T.
    attn_impl: "reference" (the default: the chapter's steps), or the opt-in "blocked", "tiled"
    or "auto" (npattn/fast/dispatch.py); "tiled" sets attn_weights to None.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float,
        qkv_bias: bool = False,
        *,
        rng=None,
        attn_impl: str = "reference",
    ):
        super().__init__()
        self.d_in, self.d_out, self.context_length, self.dropout, _ = check_attention_args(
            d_in, d_out, context_length, dropout, qkv_bias=qkv_bias
        )
        self._init_qkv(d_in, d_out, qkv_bias, rng, attn_impl)
        self.register_buffer("mask", chapter_mask(self.context_length))

    def forward(self, x):
        x = prepare_input(x, self.d_in, self.dtype, self.context_length)
        return self._attend(x, self.mask, self.dropout if self.training else 0.0)
