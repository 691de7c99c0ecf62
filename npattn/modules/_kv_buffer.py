"""KVBuffer: the storage of a KV cache, preallocated and grown geometrically, so appending a
token costs O(1) amortised instead of a copy of the whole cache (np.concatenate would copy
every cached position on every call: O(S) per token, O(S^2) for a whole generation).

Shape legend: `axis` is the sequence axis of the cached arrays (2 for keys and values
(B, G, S, E), 1 for MLA's latent (B, S, C)); P = capacity, the positions allocated.

Layout: each array is (..., P, ...) along `axis`; the held positions are [start, stop), and
[stop, P) is free. A call writes its chunk at [stop, stop + T) (`stage`) and attends to a
view; the module `commit`s only after its whole forward has succeeded, so a failed call
leaves the held positions as they were. Held positions are never overwritten, so a view
handed out earlier (m.cache_k) keeps its values; when the chunk does not fit, a new storage
is allocated and the positions still needed are copied over.

With a window W (sliding-window attention) only the last W positions are held after a call,
and a chunk of T tokens attends to at most W + T - 1 keys: the last W - 1 held ones and its
own. The storage is then bounded by about 2 (W + T) positions, and a copy of W - 1 positions
happens at most once per W + 1 appended tokens, again O(1) per token.
"""

from __future__ import annotations

import numpy as np

MIN_CAPACITY = 16  # positions allocated at least, so the first tokens do not reallocate


class KVBuffer:
    """Preallocated storage for the arrays of a KV cache (keys and values, or a latent).

    Shapes: each array (..., P, ...) with P >= stop on `axis`; held part (..., stop - start, ...).
    """

    def __init__(self, count: int, axis: int, window: int | None = None, max_positions=None):
        self.count, self.axis = count, axis  # how many arrays (k and v: 2), their sequence axis
        self.window = window  # hold only the last `window` positions (None: all)
        self.max_positions = max_positions  # never more positions than this (None: no limit)
        self.arrays: tuple = ()  # the storage, one array per cached quantity
        self.start = self.stop = 0  # held positions: [start, stop) on `axis`
        self._staged = None  # (arrays, start, stop) written by stage(), waiting for commit()

    def _span(self, a: int, b: int) -> tuple:
        return (slice(None),) * self.axis + (slice(a, b),)  # [..., a:b, ...] on `axis`

    def __len__(self) -> int:
        """The number of held positions."""
        return self.stop - self.start

    @property
    def capacity(self) -> int:
        return self.arrays[0].shape[self.axis] if self.arrays else 0

    def held(self, i: int):
        """Array i's held positions as a read-only view, or None when empty."""
        if self.stop == self.start:
            return None
        view = self.arrays[i][self._span(self.start, self.stop)]
        view.flags.writeable = False
        return view

    @property
    def nbytes(self) -> int:
        """Bytes of the held positions (what the cache stores)."""
        if not self.arrays:
            return 0
        return sum(a.nbytes // a.shape[self.axis] for a in self.arrays) * len(self)

    @property
    def allocated_nbytes(self) -> int:
        """Bytes of the storage, held positions and free room together."""
        return sum(a.nbytes for a in self.arrays)

    def stage(self, *chunks) -> tuple:
        """Write the chunks behind the held positions; return what this call attends to.

        Shapes: chunks (..., T, ...) on `axis` -> views (..., n + T, ...), with n the held
        positions the chunk needs (all of them, or the last W - 1 with a window).
        Nothing is held until commit().
        """
        T = chunks[0].shape[self.axis]
        n = len(self) if self.window is None else min(len(self), self.window - 1)
        arrays, begin = self.arrays, self.stop - n
        if not arrays or self.stop + T > self.capacity:
            # 1. no room: a new storage, the n positions still needed copied to its front
            need = n + T
            cap = max(need, 2 * self.capacity, MIN_CAPACITY)  # doubling: O(1) amortised
            if self.window is not None:
                cap = min(cap, max(need, 2 * self.window))  # bounded by about 2 W
            if self.max_positions is not None:
                cap = min(cap, max(need, self.max_positions))
            new = []
            for i, chunk in enumerate(chunks):
                shape = list(chunk.shape)
                shape[self.axis] = cap
                a = np.empty(shape, dtype=chunk.dtype)  # (..., P, ...)
                if n:
                    a[self._span(0, n)] = self.arrays[i][self._span(begin, self.stop)]
                new.append(a)
            arrays, begin = tuple(new), 0
        # 2. the chunk goes at [begin + n, begin + n + T): past every held position
        stop = begin + n + T
        for a, chunk in zip(arrays, chunks):
            a[self._span(begin + n, stop)] = chunk
        self._staged = (arrays, begin, stop)
        return tuple(a[self._span(begin, stop)] for a in arrays)

    def commit(self) -> None:
        """Hold what stage() wrote: the chunk joins the held positions (the last W of them)."""
        arrays, begin, stop = self._staged  # begin: the first position this call attended
        self._staged = None
        if self.window is not None:
            begin = max(begin, stop - self.window)  # the last W positions
        self.arrays, self.start, self.stop = arrays, begin, stop


class CacheView:
    """A read-only module attribute: the held part of array `index` of the module's KVBuffer
    (a view, not a copy), or None when the cache is empty."""

    def __init__(self, index: int):
        self.index = index

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return obj._kv.held(self.index)

    def __set__(self, obj, value):
        raise AttributeError(
            f"{self.name} is read-only: forward(x, use_cache=True) appends to it and "
            f"reset_cache() empties it"
        )
