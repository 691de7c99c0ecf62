"""Attention: the attention layer of today's decoder models, one list of optional steps.

GPT-2, GPT-NeoX, Llama, Mistral, Mixtral, Qwen2/3, Gemma 2/3, OLMo 2, Phi-3 and gpt-oss all
run these steps; a family is a choice of switches in its AttentionConfig (models/config.py),
not a class of its own. torch_port.hf reads transformers' configs into one.

Shape legend: B batch, T query tokens of this call, S key tokens (cached ones included),
H = num_heads, G = num_kv_heads (G divides H), E = head_dim, R = RoPE's rotated dims of E,
d = hidden_size.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _guard
from .._checks import check_allocation, check_bool, make_rng
from ..fast.fused_linear import fused_layers_backward, fused_layers_forward
from ..modules._input import attn_impl_property
from ..modules._kv import (
    CacheView,
    KVCacheMixin,
    check_key_padding_mask,
    check_positions,
    check_scores,
    check_tokens,
)
from ..modules.base import Module
from ..modules.linear import Linear
from ..modules.rmsnorm import RMSNorm
from ..ops.heads import (
    merge_heads_backward,
    merge_heads_forward,
    split_heads_backward,
    split_heads_forward,
)
from ..ops.rope import rope_apply_backward, rope_apply_forward
from .attend import (
    ATTENTION_IMPLS,
    attention_backward,
    attention_forward,
    attention_inference,
    resolve_impl,
)
from .config import AttentionConfig
from .mask import Mask


class AttentionCache(NamedTuple):
    """What a full forward keeps for its backward."""

    q_split: tuple  # split_heads_forward's caches
    k_split: tuple
    v_split: tuple
    q_rope: tuple | None  # rope_apply_forward's caches, or None without RoPE
    k_rope: tuple | None
    attention: object  # SDPACache or FlashCache
    merge: tuple
    cross: bool  # keys and values from x_kv
    qkv: tuple | None  # fused_layers_forward's cache on the tiled path, else None
    out: tuple | None


class Call(NamedTuple):
    """One call's checked arguments (Attention.inputs)."""

    x: np.ndarray  # (B, T, d)
    x_kv: np.ndarray | None  # (B, S, d), cross-attention
    use_cache: bool
    positions: np.ndarray  # (T,) or (B, T)
    key_padding_mask: np.ndarray | None  # (B, S)
    tiled: bool  # a full forward on the tiled path (attn_impl "tiled", or "auto" from 512)


SINK_INIT_STD = 0.02  # the sinks start near 0: a small share of each row goes nowhere


class Attention(KVCacheMixin, Module):
    """A decoder's attention layer: every option of AttentionConfig, one step each.

    Shapes: x (B, T, d); positions (T,) or (B, T) integers >= 0, or None (the token's slot:
    ptr_current_pos + 0 .. T - 1); key_padding_mask (B, S) boolean, True = a real token,
    covering the cached tokens and this call's (S = ptr_current_pos + T with use_cache)
    -> out (B, T, d_out) (d_out = hidden_size unless the config says otherwise). With x_kv
    (B, S, d) the keys and values come from x_kv (cross-attention: not causal, no RoPE, no
    cache) and backward returns (dx, dx_kv).

    Forward (walked backwards in `backward`):
        1. queries, keys, values = W_query(x), W_key(x), W_value(x)   (x_kv for the keys
           and values in cross-attention)  (B, T, H * E); (B, S, G * E) each
        2. QK-norm over the whole width: q_norm(queries), k_norm(keys)   (qk_norm "all")
        3. split heads                     (B, H, T, E); (B, G, T, E) each
        4. QK-norm over each head's E: q_norm(queries), k_norm(keys)     (qk_norm "head")
        5. RoPE at the tokens' positions, the first R dims of each head  (rope)
        6. cache: earlier tokens' keys (after RoPE) and values in front  (use_cache; then
           7.-10. run forward only, and nothing is kept for a backward)
        7. mask: causal by slot (the token order), within the window, and key padding
        8. attention: scale, soft-cap, sinks, each key/value head shared by its group
                                           (B, H, T, E)
        9. merge heads                     (B, H, T, E) -> (B, T, H * E)
        10. out = out_proj(context)        (B, T, H * E) -> (B, T, d_out)

    attn_impl: "reference" (the default: the steps above, step 8 as sdpa_forward), "tiled"
    (step 8 as flash_attention_forward, memory linear in T; attn_weights is None) or "auto"
    (tiled from 512 tokens). Cached decoding runs the same forward-only step whatever it says.
    """

    attn_impl = attn_impl_property(ATTENTION_IMPLS)
    # the order the projections are made in: their weights' draws from rng and the
    # state_dict's order (GroupedQueryAttention keeps the book's, keys first)
    _projection_order = ("W_query", "W_key", "W_value", "out_proj")
    cache_k, cache_v = CacheView(0), CacheView(1)  # (B, G, S_cached, E), read-only views

    def __init__(self, config: AttentionConfig, *, rng=None, attn_impl: str = "reference"):
        super().__init__()
        if not isinstance(config, AttentionConfig):
            raise TypeError(f"config must be an npattn.AttentionConfig, got {config!r}")
        self._config = c = config
        self.attn_impl = attn_impl
        self.rng = make_rng(rng)
        H, G, E, d = c.num_heads, c.kv_heads, c.head_size, c.hidden_size
        widest = max(H * E, c.out_width)  # the largest weight, checked before any is made
        check_allocation((widest, max(d, H * E)), 4, "num_heads, head_dim, hidden_size, d_out",
                         "a float32 weight")  # fmt: skip
        if c.sinks:  # one logit per head; own parameters come first in the state_dict
            sinks = self.rng.normal(0.0, SINK_INIT_STD, size=H).astype(np.float32)
            self.register_parameter("sinks", sinks)
        else:
            self.sinks = None
        shapes = {  # (in, out, bias) of each projection
            "W_query": (d, H * E, c.qkv_bias),
            "W_key": (d, G * E, c.qkv_bias),
            "W_value": (d, G * E, c.qkv_bias),
            "out_proj": (H * E, c.out_width, c.out_bias),
        }
        for name in self._projection_order:  # the order the weights are drawn from rng
            d_in, d_out, bias = shapes[name]
            setattr(self, name, Linear(d_in, d_out, bias=bias, rng=self.rng))
        if c.qk_norm is not None:
            n = c.qk_norm
            q_dim, k_dim = (H * E, G * E) if n.width == "all" else (E, E)
            self.q_norm = RMSNorm(q_dim, eps=n.eps, offset=n.offset)
            self.k_norm = RMSNorm(k_dim, eps=n.eps, offset=n.offset)
        else:
            self.q_norm = self.k_norm = None
        self.attn_weights = None  # (B, H, T, S) of the last reference forward
        self.dropout_mask = None
        self.reset_cache()

    @property
    def config(self) -> AttentionConfig:
        """The configuration: the one source of truth, read-only (its sizes fixed the
        weights); type(m)(m.config) plus the state_dict rebuilds the module."""
        return self._config

    def _kv_limits(self) -> tuple:
        return self.config.window, None  # with a window, the cache holds the last W tokens

    # -- the one check of a call: everything is checked before anything changes ----------

    def inputs(self, x, use_cache, positions, key_padding_mask, x_kv=None) -> Call:
        """One call's arguments, checked before anything is computed or changed.

        Shapes: -> Call with x (B, T, d) and x_kv (B, S, d) or None, private and read-only;
        positions (T,) or (B, T) int64; key_padding_mask (B, S) boolean or None.
        """
        c = self.config
        x = check_tokens(x, c.hidden_size, self.dtype)
        B, T = x.shape[:2]
        use_cache = check_bool(use_cache, "use_cache")
        if use_cache:
            self._check_decoding()
        if use_cache and not c.causal:
            raise ValueError(
                "use_cache=True needs a causal layer: with causal=False every token sees the "
                "later ones too, so decoding token by token would not give the full forward's "
                "numbers; run the full forward"
            )
        if x_kv is not None:
            if use_cache:
                raise ValueError("x_kv (cross-attention) cannot be combined with use_cache=True")
            for option in ("rope", "window"):  # both count positions in one sequence
                if getattr(c, option) is not None:
                    raise ValueError(f"x_kv (cross-attention) cannot be combined with {option}")
            x_kv = check_tokens(x_kv, c.hidden_size, self.dtype, "x_kv")
            if x_kv.shape[0] != B:
                raise ValueError(f"x_kv must have x's batch size {B}, got {x_kv.shape[0]}")
        start = self.ptr_current_pos if use_cache else 0
        S = x_kv.shape[1] if x_kv is not None else start + T  # the keys this call sees
        full = Mask(0, T, 0, S, c.causal and x_kv is None)  # a full forward's, if not cached
        tiled = not use_cache and resolve_impl(self.attn_impl, full) == "tiled"
        if not tiled:  # the (B, H, T, S) scores are formed
            check_scores(B, c.num_heads, T, S, x.dtype, "x_kv" if x_kv is not None else "x")
        if use_cache and len(self._kv) and self._kv.arrays[0].shape[0] != B:
            raise ValueError(
                f"x has batch size {B} but the cache holds {self._kv.arrays[0].shape[0]} "
                f"sequences: call reset_cache() before decoding a different batch"
            )
        kpm = key_padding_mask
        if kpm is not None:  # one entry per key: x_kv's, or the cached and the new tokens
            keys = "x" if not use_cache else f"the {start} cached and {T} new tokens"
            kpm = check_key_padding_mask(kpm, B, S, "x_kv" if x_kv is not None else keys)
            kpm = kpm.copy()  # the caller may change theirs; this call keeps its own
        return Call(x, x_kv, use_cache, check_positions(positions, B, T, start), kpm, tiled)

    # -- forward ---------------------------------------------------------------------------

    def forward(
        self, x, use_cache: bool = False, *, positions=None, key_padding_mask=None, x_kv=None
    ):
        x, x_kv, use_cache, positions, kpm, tiled = self.inputs(
            x, use_cache, positions, key_padding_mask, x_kv
        )
        c, B, T = self.config, x.shape[0], x.shape[1]
        cross = x_kv is not None
        source = x_kv if cross else x  # where the keys and values come from
        per_head = c.qk_norm is not None and c.qk_norm.width == "head"
        # the tiled arrangement also runs the projections as one product split over the
        # threads (fast/fused_linear.py): BLAS's own threads would spin on the cores after
        # their product and slow the tiles that run next
        fused = tiled and not cross
        # 1. projections                  (B, T, d) -> (B, T, H * E); (B, S, G * E) each
        if fused:
            (queries, keys, values), qkv_cache = fused_layers_forward(
                x, (self.W_query, self.W_key, self.W_value)
            )
        else:
            queries = self.W_query(x)
            keys = self.W_key(source)
            values = self.W_value(source)
            qkv_cache = None
        # 2. QK-norm over the whole projection width, before the heads are split
        if c.qk_norm is not None and not per_head:
            queries = self.q_norm(queries)
            keys = self.k_norm(keys)
        # 3. split heads                  -> (B, H, T, E); (B, G, S, E) each
        queries, q_split = split_heads_forward(queries, c.num_heads)
        keys, k_split = split_heads_forward(keys, c.kv_heads)
        values, v_split = split_heads_forward(values, c.kv_heads)
        # 4. QK-norm over each head's E dims
        if per_head:
            queries = self.q_norm(queries)
            keys = self.k_norm(keys)
        # 5. RoPE at the tokens' positions: tables in float64, cast to the compute dtype
        q_rope = k_rope = None
        if c.rope is not None:
            cos, sin = self._rope_tables(positions, x.dtype)  # (1 | B, 1, T, R)
            queries, q_rope = rope_apply_forward(queries, cos, sin, interleaved=c.rope.interleaved)
            keys, k_rope = rope_apply_forward(keys, cos, sin, interleaved=c.rope.interleaved)
        sinks = self.sinks
        start = self.ptr_current_pos if use_cache else 0
        # 6. the cache: (B, G, S_cached, E) + (B, G, T, E) -> (B, G, S, E)
        if use_cache:
            keys, values = self._kv.stage(keys, values)
            S = keys.shape[2]
            padding = None if kpm is None else kpm[:, start + T - S :]  # the keys held
            # 7. mask, described: slots start .. start + T - 1 against the last S slots
            mask = Mask(start, T, start + T - S, S, c.causal, c.window, padding)
            # 8. attention, forward only
            context, attn_weights, keep = attention_inference(
                queries, keys, values, mask, scale=c.softmax_scale, softcap=c.softcap,
                sinks=sinks, dropout_p=self._dropout_p(), rng=self.rng,
            )  # fmt: skip
            # 9.-10.
            context = context.transpose(0, 2, 1, 3).reshape(B, T, -1)  # merge heads
            out = self.out_proj(context)  # (B, T, H * E) -> (B, T, d_out)
            # everything succeeded: the chunk joins the cache, the weights are shown
            self._commit_cached(T, (_guard.readonly(attn_weights), keep))
            return out
        # 7. mask, described: causal by slot, the window, key padding   (drawn by step 8)
        S = keys.shape[2]
        mask = Mask(0, T, 0, S, c.causal and not cross, c.window, kpm)
        # 8. attention                    (B, H, T, E)
        context, attn_cache = attention_forward(
            self.attn_impl, queries, keys, values, mask, scale=c.softmax_scale,
            softcap=c.softcap, sinks=sinks, dropout_p=self._dropout_p(), rng=self.rng,
        )  # fmt: skip
        # 9. merge heads                  (B, H, T, E) -> (B, T, H * E)
        context, merge_cache = merge_heads_forward(context)
        # 10. output projection           (B, T, H * E) -> (B, T, d_out)
        if fused:
            (out,), out_cache = fused_layers_forward(context, (self.out_proj,))
        else:
            out, out_cache = self.out_proj(context), None
        reference = hasattr(attn_cache, "attn_weights")  # the tiled path forms no weights
        self.attn_weights = attn_cache.attn_weights if reference else None  # (B, H, T, S)
        self.dropout_mask = attn_cache.keep if reference else None
        self.reset_cache()
        self._cache = AttentionCache(
            q_split, k_split, v_split, q_rope, k_rope, attn_cache, merge_cache, cross, qkv_cache,
            out_cache,
        )  # fmt: skip
        return out

    def _dropout_p(self) -> float:
        return self.config.dropout if self.training else 0.0

    def _rope_tables(self, positions, dtype):
        """cos and sin at the positions, (1 | B, 1, T, R) in the compute dtype."""
        cos, sin = self.config.rope.tables(self.config.head_size, positions)  # (T | B, T, R)
        if positions.ndim == 1:
            cos, sin = cos[None], sin[None]  # (T, R) -> (1, T, R)
        return cos[:, None].astype(dtype), sin[:, None].astype(dtype)  # -> (., 1, T, R)

    # -- backward --------------------------------------------------------------------------

    def backward(self, dout):
        """dL/dx from dL/dout, or (dx, dx_kv) after a cross-attention forward; every
        parameter's gradient lands in m.grads."""
        q_split, k_split, v_split, q_rope, k_rope, attn_cache, merge_cache, cross, qkv, out = (
            self._require_full_forward()
        )
        c = self.config
        per_head = c.qk_norm is not None and c.qk_norm.width == "head"
        # 10.
        if out is None:
            dcontext = self.out_proj.backward(dout)  # (B, T, H * E)
        else:  # the fused product: out_proj is handed its gradients
            dcontext = fused_layers_backward(dout, out, (self.out_proj,))
        # 9.
        dcontext = merge_heads_backward(dcontext, merge_cache)  # (B, H, T, E)
        # 8. a key/value head fed its whole group: the backward sums the group's gradients
        grads = attention_backward(dcontext, attn_cache)  # sdpa's or the tiled one
        dqueries, dkeys, dvalues = grads[:3]  # (B, H, T, E); (B, G, T, E) each
        self._grads = {"sinks": grads[3]} if c.sinks else {}  # (H,)
        # 7.-6. the mask is a constant; no cache in a full forward
        # 5. RoPE: the rotation by -theta
        if c.rope is not None:
            dqueries = rope_apply_backward(dqueries, q_rope)
            dkeys = rope_apply_backward(dkeys, k_rope)
        # 4.
        if per_head:
            dqueries = self.q_norm.backward(dqueries)
            dkeys = self.k_norm.backward(dkeys)
        # 3.
        dqueries = split_heads_backward(dqueries, q_split)  # (B, T, H * E)
        dkeys = split_heads_backward(dkeys, k_split)  # (B, S, G * E)
        dvalues = split_heads_backward(dvalues, v_split)  # (B, S, G * E)
        # 2.
        if c.qk_norm is not None and not per_head:
            dqueries = self.q_norm.backward(dqueries)
            dkeys = self.k_norm.backward(dkeys)
        # 1. x (or x_kv) feeds several projections: their terms are summed
        if qkv is not None:  # one product: its backward sums the three terms of dx
            layers = (self.W_query, self.W_key, self.W_value)
            return fused_layers_backward((dqueries, dkeys, dvalues), qkv, layers)
        dx = self.W_query.backward(dqueries)
        dsource = self.W_key.backward(dkeys)
        dsource += self.W_value.backward(dvalues)
        if cross:
            return dx, dsource
        dx += dsource
        return dx

    def extra_repr(self) -> str:
        return self.config.describe()
