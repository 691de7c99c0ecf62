"""What the modern attention classes share: the token checks, the causal (sliding-window)
mask from absolute positions with an optional key-padding mask, and the KV cache bookkeeping.

Shape legend: B batch, T query tokens of this call, S key tokens (cached ones included),
H heads, E head dim.

The cache follows the book's bonus code: forward(x, use_cache=True) appends this chunk's keys
and values (or MLA's latent) and attends from the chunk's absolute positions
ptr_current_pos .. ptr_current_pos + T - 1; forward(x) is the full forward and empties the
cache; reset_cache() empties it. A call that raises leaves the cache as it was: the new arrays
are assigned only once everything else has succeeded.
"""

from __future__ import annotations

import numpy as np

from .._checks import as_float_array, check_ndim
from ..ops.masks import position_mask

INFERENCE_ONLY = (
    "backward after forward(x, use_cache=True): the cache path is inference only; "
    "run forward(x) without use_cache before backward"
)


def check_tokens(x, d_in: int, dtype, name: str = "x") -> np.ndarray:
    """x as a (B, T, d_in) array in the module's dtype, else a named ValueError/TypeError."""
    x = as_float_array(x, name)
    check_ndim(x, name, 3, f"(B, T, d_in={d_in})")
    if x.shape[-1] != d_in:
        raise ValueError(f"{name} must have shape (B, T, d_in={d_in}), got {tuple(x.shape)}")
    if 0 in x.shape:
        raise ValueError(f"{name} must have at least one sequence and one token: got {x.shape}")
    return x.astype(dtype, copy=False)


def check_key_padding_mask(key_padding_mask, B: int, S: int) -> np.ndarray:
    """A boolean (B, S) mask, True = a real key (attend), else a named error."""
    kpm = np.asarray(key_padding_mask)
    if kpm.dtype != np.bool_:
        raise TypeError(f"key_padding_mask must be boolean (True = attend), got dtype {kpm.dtype}")
    if kpm.shape != (B, S):
        raise ValueError(f"key_padding_mask must have shape (B={B}, S={S}), got {tuple(kpm.shape)}")
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
    """reset_cache(), cache_nbytes and the call checks for a class with a KV cache.

    The class lists its cache attributes in _kv_names (arrays with the batch on axis 0).
    """

    _kv_names: tuple = ("cache_k", "cache_v")

    def reset_cache(self) -> None:
        """Empty the cache: no cached positions, ptr_current_pos = 0."""
        for name in self._kv_names:
            object.__setattr__(self, name, None)
        self.ptr_current_pos = 0

    @property
    def cache_nbytes(self) -> int:
        """Bytes held by the cache arrays (0 when empty)."""
        return sum(
            int(a.nbytes) for a in (getattr(self, n) for n in self._kv_names) if a is not None
        )

    def _check_call(self, B: int, use_cache, key_padding_mask) -> bool:
        """The checks made before anything is computed; returns use_cache as a bool."""
        if not isinstance(use_cache, (bool, np.bool_)):
            raise TypeError(f"use_cache must be a bool, got {use_cache!r}")
        if use_cache and key_padding_mask is not None:
            raise ValueError("key_padding_mask is only allowed when use_cache=False")
        cached = getattr(self, self._kv_names[0])
        if use_cache and cached is not None and cached.shape[0] != B:
            raise ValueError(
                f"x has batch size {B} but the cache holds {cached.shape[0]} sequences: "
                f"call reset_cache() before decoding a different batch"
            )
        return bool(use_cache)

    def _require_full_forward(self):
        """The last full forward's cache, or RuntimeError after a cached forward."""
        if self._cache is None and self.ptr_current_pos > 0:
            raise RuntimeError(INFERENCE_ONLY)
        return self._require_cache()

    def _invalidate(self) -> None:
        """New parameter values (or dtype) make the cached keys and values stale."""
        super()._invalidate()
        self.reset_cache()
