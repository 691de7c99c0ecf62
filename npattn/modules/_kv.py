"""What the modern attention classes share: the token checks, the causal (sliding-window)
mask from absolute positions with an optional key-padding mask, and the KV cache: its storage
(KVBuffer), its attributes (CacheView) and the forward-only attention of a cached call. The
chapter's MultiHeadAttention uses the same KV cache (KVCacheMixin).

Shape legend: B batch, T query tokens of this call, S key tokens (cached ones included),
H heads, G key/value heads (G divides H), E head dim.

The cache follows the book's bonus code: forward(x, use_cache=True) appends this chunk's keys
and values (or MLA's latent) and attends from the chunk's absolute positions
ptr_current_pos .. ptr_current_pos + T - 1; forward(x) is the full forward and empties the
cache; reset_cache() empties it. A call that raises leaves the cache as it was: the chunk is
written behind the held positions and counted in only once everything else has succeeded.
"""

from __future__ import annotations

import numpy as np

from .. import _grad, _guard
from .._checks import as_array, as_float_array, check_ndim
from ..ops.dropout import dropout_forward, dropout_keep_mask
from ..ops.masks import position_mask
from ..ops.softmax import softmax_inplace
from ._kv_buffer import CacheView, KVBuffer

__all__ = ["CacheView", "KVBuffer", "KVCacheMixin", "cached_attention"]

INFERENCE_ONLY = (
    "backward after forward(x, use_cache=True): the cache path is inference only; "
    "run forward(x) without use_cache before backward"
)


def check_tokens(x, d_in: int, dtype, name: str = "x") -> np.ndarray:
    """x as a (B, T, d_in) array in the module's dtype, else a named ValueError/TypeError.

    The result is private and read-only (npattn/_guard.py): one copy, however many
    projections keep it, and the caller may change x before the backward.
    """
    x_in, x = x, as_float_array(x, name)
    check_ndim(x, name, 3, f"(B, T, d_in={d_in})")
    if x.shape[-1] != d_in:
        raise ValueError(f"{name} must have shape (B, T, d_in={d_in}), got {tuple(x.shape)}")
    if 0 in x.shape:
        raise ValueError(f"{name} must have at least one sequence and one token: got {x.shape}")
    return _guard.private(x.astype(dtype, copy=False), x_in)


def check_key_padding_mask(key_padding_mask, B: int, S: int, source: str = "x") -> np.ndarray:
    """A boolean (B, S) mask, True = a real key (attend), else a named error; the keys come
    from `source` (x, or x_kv in cross-attention), which the message names."""
    kpm = as_array(key_padding_mask, "key_padding_mask")
    if kpm.dtype != np.bool_:
        raise TypeError(f"key_padding_mask must be boolean (True = attend), got dtype {kpm.dtype}")
    if kpm.shape != (B, S):
        raise ValueError(
            f"key_padding_mask must have shape (B={B}, S={S}), one entry per key of {source}, "
            f"got {tuple(kpm.shape)}"
        )
    return kpm


def attention_mask(q_start: int, T: int, k_start: int, S: int, window=None, kpm=None):
    """Causal (sliding-window) mask at absolute positions, and the key-padding mask.

    Shapes: -> (T, S), or (B, 1, T, S) with kpm (B, S). True = attend.
    """
    mask = position_mask(
        np.arange(q_start, q_start + T), np.arange(k_start, k_start + S), window=window
    )  # (T, S)
    if kpm is not None:
        mask = mask & kpm[:, None, None, :]  # (T, S) & (B, 1, 1, S) -> (B, 1, T, S)
    return mask


def cached_attention(
    queries, keys, values, mask=None, dropout_p: float = 0.0, rng=None, scale=None
):
    """Forward-only SDPA for the cache path: each key/value head is read once by its group of
    query heads (no repeated copy of the cache), and no backward cache is kept.

    Shapes: queries (B, H, T, E), keys (B, G, S, E), values (B, G, S, Ev) with G dividing H,
    mask (T, S) True = attend (or broadcastable to the scores' (B, G, H / G, T, S), e.g.
    (B, 1, 1, T, S) for key padding), or None when every key is attended (one query at the
    newest position) -> context (B, H, T, Ev), attn_weights (B, H, T, S) before dropout, keep-mask
    or None. scale defaults to 1 / sqrt(E).
    The same numbers as sdpa_forward(..., enable_gqa=True): query head h uses key/value head
    h // (H / G), as repeat_interleave orders them.
    """
    B, H, T, E = queries.shape
    G, S = keys.shape[1], keys.shape[2]
    n = H // G  # query heads per key/value head
    # 1. attn_scores = (q * scale) @ k^T, a group's query heads stacked as n * T rows
    q = queries.reshape(B, G, n * T, E)  # (B, H, T, E) -> (B, G, n * T, E)
    q = q * q.dtype.type(1.0 / np.sqrt(E) if scale is None else scale)
    attn_scores = q @ keys.swapaxes(-1, -2)  # (B, G, n * T, E) @ (B, G, E, S) -> (B, G, n*T, S)
    # 2. mask: -inf where a key is not attended
    if mask is not None:
        scores = attn_scores.reshape(B, G, n, T, S)  # a view: (B, G, n * T, S) -> (.., n, T, S)
        np.copyto(scores, -np.inf, where=~mask)  # (T, S) broadcast over (B, G, n)
    # 3. attn_weights = softmax(attn_scores), in place
    attn_weights = softmax_inplace(attn_scores, axis=-1)  # (B, G, n * T, S)
    # 4. dropout on the weights (training mode only); the keep-mask is drawn here, as
    #    dropout_forward would, since it is shown (m.dropout_mask) and no cache is kept
    keep = dropout_keep_mask(attn_weights.shape, dropout_p, rng) if dropout_p > 0.0 else None
    dropped, _ = dropout_forward(attn_weights, dropout_p, keep=keep)
    # 5. context = dropped @ v
    context = dropped @ values  # (B, G, n * T, S) @ (B, G, S, Ev) -> (B, G, n * T, Ev)
    context = context.reshape(B, H, T, values.shape[-1])  # -> (B, H, T, Ev)
    attn_weights = attn_weights.reshape(B, H, T, S)
    keep = None if keep is None else keep.reshape(B, H, T, S)
    return context, attn_weights, keep


class KVCacheMixin:
    """reset_cache(), cache_nbytes, cache_allocated_nbytes and the call checks for a class
    with a KV cache.

    The class lists its cache attributes in _kv_names (CacheView descriptors reading the
    arrays of self._kv, batch on axis 0) and their sequence axis in _kv_axis.
    A cached call is inference only: the class's forward(x, use_cache=True) runs under
    npattn.no_grad() (npattn/_grad.py), so neither the module nor any child keeps a backward
    cache or copies a weight.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:  # each class that defines forward, subclasses included
            cls.forward = _grad.no_grad_when_cached(cls.__dict__["forward"])

    _kv_names: tuple = ("cache_k", "cache_v")
    _kv_axis: int = 2  # (B, G, S, E)

    def _kv_limits(self) -> tuple:
        """(window, max_positions) of the cache: None, None unless the class bounds them."""
        return None, None

    def reset_cache(self) -> None:
        """Empty the cache: no cached positions, ptr_current_pos = 0."""
        window, max_positions = self._kv_limits()
        self._kv = KVBuffer(len(self._kv_names), self._kv_axis, window, max_positions)
        self.ptr_current_pos = 0

    @property
    def cache_nbytes(self) -> int:
        """Bytes held by the cache: the cached positions' keys and values (0 when empty).

        The storage behind them is larger (room for the next tokens): cache_allocated_nbytes.
        """
        return self._kv.nbytes

    @property
    def cache_allocated_nbytes(self) -> int:
        """Bytes allocated for the cache: held positions plus room to grow (at most about
        twice the held positions, or about 2 * sliding_window_size with a window)."""
        return self._kv.allocated_nbytes

    def _check_call(self, B: int, use_cache, key_padding_mask) -> bool:
        """The checks made before anything is computed; returns use_cache as a bool."""
        if not isinstance(use_cache, (bool, np.bool_)):
            raise TypeError(f"use_cache must be a bool, got {use_cache!r}")
        if use_cache and key_padding_mask is not None:
            raise ValueError("key_padding_mask is only allowed when use_cache=False")
        kv = self._kv
        if use_cache and len(kv) and kv.arrays[0].shape[0] != B:
            raise ValueError(
                f"x has batch size {B} but the cache holds {kv.arrays[0].shape[0]} sequences: "
                f"call reset_cache() before decoding a different batch"
            )
        return bool(use_cache)

    def _attend_cached(self, queries, keys, values):
        """A cached call's steps after the cache: mask, attention, merge heads, out_proj;
        then the staged chunk joins the cache. Inference only: nothing is kept for backward.

        Shapes: queries (B, H, T, E) at positions ptr_current_pos .., keys and values
        (B, G, S, E) from KVBuffer.stage (the last S positions) -> (B, T, d_out).
        """
        return self._finish_cached(self._cached_sdpa(queries, keys, values))

    def _cached_sdpa(self, queries, keys, values, scale=None):
        """Mask and attention of a cached call; sets attn_weights and dropout_mask.

        Shapes: queries (B, H, T, E), keys (B, G, S, E), values (B, G, S, Ev)
        -> context (B, H, T, Ev).
        """
        T, S = queries.shape[2], keys.shape[2]
        # mask: one query at the newest position attends every key it was given, so only a
        # chunk of several tokens needs one (causal, and the window, at absolute positions)
        mask = self._cached_mask(self.ptr_current_pos, T, S) if T > 1 else None
        dropout_p = getattr(self, "dropout", 0.0) if self.training else 0.0  # Qwen3 has none
        context, attn_weights, self.dropout_mask = cached_attention(
            queries, keys, values, mask, dropout_p, self.rng, scale
        )
        self.attn_weights = _guard.readonly(attn_weights)  # shown, as the full forward's are
        return context  # (B, H, T, Ev)

    def _cached_mask(self, q_start: int, T: int, S: int):
        """The mask of a cached chunk of T > 1 tokens at q_start, attending its last S keys.

        Shapes: -> (T, S), True = attend.
        """
        return attention_mask(q_start, T, q_start + T - S, S, window=self._kv.window)

    def _finish_cached(self, context):
        """Merge heads and out_proj, then commit the staged chunk: (B, H, T, E) -> (B, T, d)."""
        B, H, T, E = context.shape
        context = context.transpose(0, 2, 1, 3).reshape(B, T, H * E)  # merge heads
        context_vec = self.out_proj(context)  # (B, T, H * E) -> (B, T, d_out)
        self._kv.commit()  # everything succeeded: the chunk joins the cache
        self.ptr_current_pos += T
        self._cache = None  # inference only: no backward
        return context_vec

    def _require_full_forward(self):
        """The last full forward's cache, or RuntimeError after a cached forward."""
        if self._cache is None and self.ptr_current_pos > 0:
            raise RuntimeError(INFERENCE_ONLY)
        return self._require_cache()

    def _invalidate(self) -> None:
        """New parameter values (or dtype) make the cached keys and values stale."""
        super()._invalidate()
        self.reset_cache()
