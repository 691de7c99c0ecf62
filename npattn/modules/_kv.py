"""What the modern attention classes share: the token checks, the causal (sliding-window)
mask from absolute positions with an optional key-padding mask, and the KV cache: its storage
(KVBuffer), its attributes (CacheView) and the forward-only attention of a cached call. The
chapter's MultiHeadAttention uses the same KV cache (KVCacheMixin).

Shape legend: B batch, T query tokens of this call, S key tokens (cached ones included),
H heads, G key/value heads (G divides H), E head dim.

The cache follows the book's bonus code: forward(x, use_cache=True) appends this chunk's keys
and values (or MLA's latent) and attends from the chunk's absolute positions
ptr_current_pos .. ptr_current_pos + T - 1; forward(x) is the full forward and empties the
cache; reset_cache() empties it. Nothing else empties it: new parameters (load_state_dict,
astype, a setter such as dropout) while it holds tokens make the next cached call raise
RuntimeError until reset_cache(), since the held keys came from the old ones. A call that
raises leaves the cache as it was: the chunk is written behind the held positions and counted
in only once everything else has succeeded.

Threads: the thread whose cached call filled the cache owns it; a cached call from another
thread raises RuntimeError until reset_cache() (which any thread may call). Calls on one
module and reset_cache() take turns (one lock per module), so a reset never lands in the
middle of a call.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from .. import _grad, _guard
from .._checks import as_array, as_float_array, check_allocation, check_ndim
from ..fast.grouped import grouped_attention
from ..ops.masks import position_mask
from ._kv_buffer import CacheView, KVBuffer

__all__ = ["CacheView", "KVBuffer", "KVCacheMixin", "check_scores"]

_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> its RLock
_locks_lock = threading.Lock()


def _lock(module) -> threading.RLock:
    """The module's own lock (made on first use; copy.deepcopy gives a copy its own)."""
    with _locks_lock:
        lock = _locks.get(module)
        if lock is None:
            lock = _locks[module] = threading.RLock()
        return lock


def _one_at_a_time(method):
    """method, run holding the module's lock: calls and reset_cache() take turns."""

    def wrapper(self, *args, **kwargs):
        with _lock(self):
            return method(self, *args, **kwargs)

    wrapper.__name__, wrapper.__qualname__ = method.__name__, method.__qualname__
    wrapper.__doc__, wrapper.__wrapped__ = method.__doc__, method
    return wrapper


STALE_CACHE = (
    "the parameters changed (load_state_dict, astype or a setter such as dropout) since the "
    "cache was filled, so its keys and values are stale: call reset_cache() before decoding"
)

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


def check_scores(B: int, H: int, T: int, S: int, dtype, name: str = "x") -> None:
    """ValueError naming `name` when one (B, H, T, S) array of attention scores would not
    fit in this machine's memory: checked before anything is computed or changed."""
    check_allocation((B, H, T, S), np.dtype(dtype).itemsize, name, "attention scores")


def check_positions(positions, B: int, T: int, start: int = 0) -> np.ndarray:
    """RoPE positions as a new int64 array (T,) or (B, T), each >= 0 and < 2**62 (angles and
    masks are computed in int64); None gives the tokens' slots start .. start + T - 1."""
    if positions is None:
        return np.arange(start, start + T)  # (T,)
    positions = as_array(positions, "positions")
    if not np.issubdtype(positions.dtype, np.integer):
        raise TypeError(f"positions must be integers, got dtype {positions.dtype}")
    if positions.shape not in ((T,), (B, T)):
        raise ValueError(
            f"positions must have shape (T={T},) or (B={B}, T={T}), got {tuple(positions.shape)}"
        )
    if positions.size and positions.min() < 0:
        raise ValueError(f"positions must be >= 0, got {int(positions.min())}")
    if positions.size and int(positions.max()) >= 2**62:
        raise ValueError(f"positions must be < 2**62, got {int(positions.max())}")
    return positions.astype(np.int64)  # a copy: the caller's array is not kept


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
            cls.forward = _one_at_a_time(_grad.no_grad_when_cached(cls.__dict__["forward"]))
        if "reset_cache" in cls.__dict__:
            cls.reset_cache = _one_at_a_time(cls.__dict__["reset_cache"])

    _kv_names: tuple = ("cache_k", "cache_v")
    _kv_axis: int = 2  # (B, G, S, E)

    def _kv_limits(self) -> tuple:
        """(window, max_positions) of the cache: None, None unless the class bounds them."""
        return None, None

    @_one_at_a_time
    def reset_cache(self) -> None:
        """Empty the cache: no cached positions, ptr_current_pos = 0; any thread may then
        decode."""
        window, max_positions = self._kv_limits()
        self._kv = KVBuffer(len(self._kv_names), self._kv_axis, window, max_positions)
        self.ptr_current_pos = 0
        self._kv_owner = None  # the thread whose cached calls fill the cache
        self._kv_stale = False  # parameters changed since the cache was filled

    def __getstate__(self):
        """A copy (copy.deepcopy, pickle) keeps the cache but no owner thread: the first
        thread that decodes with the copy owns it (thread ids mean nothing elsewhere)."""
        state = dict(self.__dict__)
        state["_kv_owner"] = None
        return state

    def _check_decoding(self) -> None:
        """The checks of a cached call on the held cache: made before anything changes."""
        if not self.ptr_current_pos:
            return
        if getattr(self, "_kv_stale", False):
            raise RuntimeError(f"{type(self).__name__}: {STALE_CACHE}")
        owner = getattr(self, "_kv_owner", None)
        if owner is not None and owner != threading.get_ident():
            raise RuntimeError(
                f"{type(self).__name__}: another thread filled this cache; a module decodes one "
                f"sequence at a time, so use one module per thread (copy.deepcopy), or call "
                f"reset_cache() to start a new sequence in this thread"
            )

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
        if use_cache:
            self._check_decoding()
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
        return self._finish_cached(*self._cached_sdpa(queries, keys, values))

    _custom_mask = False  # True: a one-token call reads the mask too (a user may change it)

    def _cached_sdpa(self, queries, keys, values, scale=None):
        """Mask and attention of a cached call.

        Shapes: queries (B, H, T, E), keys (B, G, S, E), values (B, G, S, Ev)
        -> context (B, H, T, Ev), shown = (attn_weights (B, H, T, S), keep-mask or None),
        which _finish_cached shows once the call has succeeded.
        """
        T, S = queries.shape[2], keys.shape[2]
        # mask: one query at the newest position attends every key it was given, so only a
        # chunk of several tokens needs one (causal, and the window, at absolute positions),
        # unless the mask is a buffer the user may have changed (MultiHeadAttention)
        many = T > 1 or self._custom_mask
        mask = self._cached_mask(self.ptr_current_pos, T, S) if many else None
        dropout_p = getattr(self, "dropout", 0.0) if self.training else 0.0  # Qwen3 has none
        context, attn_weights, keep = grouped_attention(
            queries, keys, values, mask, scale=scale, dropout_p=dropout_p, rng=self.rng
        )
        return context, (_guard.readonly(attn_weights), keep)  # (B, H, T, Ev), shown

    def _cached_mask(self, q_start: int, T: int, S: int):
        """The mask of a cached chunk of T > 1 tokens at q_start, attending its last S keys.

        Shapes: -> (T, S), True = attend.
        """
        return attention_mask(q_start, T, q_start + T - S, S, window=self._kv.window)

    def _finish_cached(self, context, shown):
        """Merge heads and out_proj, then commit the staged chunk and show the weights.

        Shapes: context (B, H, T, E) -> (B, T, d); shown (attn_weights, keep-mask or None).
        """
        B, H, T, E = context.shape
        context = context.transpose(0, 2, 1, 3).reshape(B, T, H * E)  # merge heads
        context_vec = self.out_proj(context)  # (B, T, H * E) -> (B, T, d_out)
        self._commit_cached(T, shown)
        return context_vec

    def _commit_cached(self, T: int, shown) -> None:
        """Everything succeeded: the chunk joins the cache, owned by this thread, and the
        call's weights and keep-mask are shown."""
        self._kv.commit()
        self.ptr_current_pos += T
        self._kv_owner = threading.get_ident()
        self.attn_weights, self.dropout_mask = shown
        self._cache = None  # inference only: no backward

    def _require_full_forward(self):
        """The last full forward's cache, or RuntimeError after a cached forward."""
        if self._cache is None and self.ptr_current_pos > 0:
            raise RuntimeError(INFERENCE_ONLY)
        return self._require_cache()

    def _invalidate(self) -> None:
        """New parameter values (or dtype) make the held keys and values stale: the next
        cached call raises until reset_cache() (the cache is not emptied behind the caller's
        back); the last forward's backward cache is dropped."""
        super()._invalidate()
        if self.ptr_current_pos:
            self._kv_stale = True
