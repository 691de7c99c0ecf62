"""What the cached attention classes share: the KV cache's bookkeeping, the position mask and
the masked softmax.

The cache follows the book's bonus code (ch. 4): `forward(x, use_cache=True)` appends the
chunk's keys and values and attends from the chunk's absolute positions
ptr_current_pos .. ptr_current_pos + T - 1; `forward(x)` is the full forward and empties the
cache; `reset_cache()` empties it. Every check runs, and every tensor is computed, before the
cache is written, so after an error the cache is unchanged.

Shape legend: B batch, T query tokens, S key tokens, H heads, G = num_kv_groups (key/value
heads), E = head_dim.
"""

from __future__ import annotations

import torch


class KVCacheMixin:
    """reset_cache, cache_nbytes and the input checks of a module with a KV cache.

    Attributes: ptr_current_pos (int, positions seen), and the tensors named in CACHE_NAMES,
    registered as non-persistent buffers (None when empty; not in the state_dict).
    """

    CACHE_NAMES: tuple[str, ...] = ("cache_k", "cache_v")  # each (B, G, S_cached, E)
    empty_batch_ok = False  # True: batch 0 gives an empty output (the chapter's classes)

    def _init_cache(self) -> None:
        for name in self.CACHE_NAMES:
            self.register_buffer(name, None, persistent=False)
        self.ptr_current_pos = 0

    def reset_cache(self) -> None:
        """Empty the cache: the next cached chunk starts at position 0."""
        for name in self.CACHE_NAMES:
            setattr(self, name, None)
        self.ptr_current_pos = 0

    @property
    def cache_nbytes(self) -> int:
        """Bytes held by the cache tensors (0 when empty)."""
        tensors = [getattr(self, name) for name in self.CACHE_NAMES]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def _commit(self, use_cache: bool, num_tokens: int, **cache) -> None:
        """Write the cache once the forward has succeeded (or empty it after a full one)."""
        if not use_cache:
            self.reset_cache()
            return
        for name, value in cache.items():
            setattr(self, name, value)
        self.ptr_current_pos += num_tokens

    def _check_call(self, x, use_cache: bool, key_padding_mask, x_kv=None) -> None:
        """Named errors for a bad x, x_kv, use_cache or key_padding_mask, or a cache of
        another batch; an empty x (no sequence or no token) is refused, as npattn does."""
        check_tensor(x, "x")
        if not isinstance(use_cache, bool):
            raise TypeError(f"use_cache must be True or False, got {use_cache!r}")
        if x_kv is not None:
            check_tensor(x_kv, "x_kv")
        if x.dim() != 3 or x.shape[-1] != self.d_in:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must have shape (B, T, d_in={self.d_in}), got {shape}")
        if 0 in x.shape and not (self.empty_batch_ok and x.shape[0] == 0 and x.shape[1]):
            raise ValueError(
                f"x must have at least one sequence and one token: got {tuple(x.shape)}"
            )
        source = x if x_kv is None else x_kv
        if x_kv is not None and (
            not torch.is_tensor(x_kv) or x_kv.dim() != 3 or x_kv.shape[::2] != x.shape[::2]
        ):
            shape = tuple(x_kv.shape) if torch.is_tensor(x_kv) else type(x_kv).__name__
            raise ValueError(
                f"x_kv must have shape (B={x.shape[0]}, S, d_in={self.d_in}), got {shape}"
            )
        if key_padding_mask is not None:
            if use_cache:
                raise ValueError("key_padding_mask is only allowed with use_cache=False")
            expected = (source.shape[0], source.shape[1])
            if (
                not torch.is_tensor(key_padding_mask)
                or key_padding_mask.dtype != torch.bool
                or tuple(key_padding_mask.shape) != expected
            ):
                got = getattr(key_padding_mask, "shape", type(key_padding_mask).__name__)
                raise ValueError(
                    f"key_padding_mask must be a boolean tensor of shape (B, S)={expected} "
                    f"(True = attend), got {tuple(got) if hasattr(got, '__len__') else got}"
                )
        cached = getattr(self, self.CACHE_NAMES[0])
        if use_cache and cached is not None and cached.shape[0] != x.shape[0]:
            raise ValueError(
                f"x has batch size {x.shape[0]} but the cache holds batch size "
                f"{cached.shape[0]}: call reset_cache() before changing the batch"
            )


def check_tensor(x, name: str) -> None:
    """TypeError unless x is a torch tensor (a numpy array is not converted here)."""
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")


def append(cached: torch.Tensor | None, new: torch.Tensor, dim: int) -> torch.Tensor:
    """The cache with the new chunk appended along the token axis `dim` (a new tensor)."""
    return new if cached is None else torch.cat([cached, new], dim=dim)


def position_keep(
    q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None = None
) -> torch.Tensor:
    """Causal (sliding-window) mask from absolute positions, True = attend.

    Shapes: q_pos (T,), k_pos (S,) -> (T, S). Query i attends key j iff 0 <= i - j < window.
    """
    diff = q_pos[:, None] - k_pos[None, :]  # (T, 1) - (1, S) -> (T, S)
    keep = diff >= 0
    if window is not None:
        keep = keep & (diff < window)
    return keep


def with_padding(keep: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    """keep (T, S) and a key-padding mask (B, S), True = attend -> (B or 1, 1, T, S)."""
    keep = keep[None, None]  # (T, S) -> (1, 1, T, S)
    if key_padding_mask is None:
        return keep
    return keep & key_padding_mask[:, None, None, :]  # (B, 1, 1, S)


def attention_weights(attn_scores: torch.Tensor, keep: torch.Tensor, head_dim: int):
    """Softmax over the keys of the scaled scores where keep is True; a row with no key is 0.

    Shapes: attn_scores (B, H, T, S), keep broadcastable to it -> attn_weights (B, H, T, S).
    """
    attn_scores = attn_scores.masked_fill(~keep, -torch.inf)
    attn_weights = torch.softmax(attn_scores / head_dim**0.5, dim=-1)  # NaN on empty rows
    no_key = ~keep.any(dim=-1, keepdim=True)  # (..., T, 1)
    return attn_weights.masked_fill(no_key, 0.0)  # the empty rows' NaN -> 0
