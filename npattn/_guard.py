"""What a cache keeps: arrays nobody else can change, so a backward uses its forward's data.

Torch's autograd keeps references to the tensors a backward needs and raises ("modified by an
inplace operation") if one changes before the backward. npattn goes one step further and
makes the change impossible, at the price of a copy:
- `private(a, given)`: `a` may be kept in a cache. When it shares memory with `given`, an
  argument the caller still holds (x, a weight, a mask), the cache keeps a copy; when it does
  not (a fresh cast, a result the op made), or when its memory is read-only for everyone (a
  view of an array marked read-only), `a` itself. Either way it is marked read-only.
- `readonly(a)`: an array the op made and also shows to the caller (m.attn_weights, a cache's
  fields) is marked read-only, so writing into it raises numpy's "read-only" ValueError rather
  than changing a later backward.
A copy runs at memory speed: measured here, about 6x faster than a crc32 fingerprint of the
same bytes (benchmarks/guard_cost.py; docs/safety.md).

Inside npattn.no_grad() (npattn/_grad.py) `private` returns `a` as given: nothing is kept
for a backward, so nothing needs a copy.

`enabled = False` switches both off (the arrays are kept as given, as before the guard); it
exists so benchmarks/guard_cost.py can time the guard's cost, not for use.
"""

from __future__ import annotations

import numpy as np

from ._grad import is_grad_enabled

enabled = True


def _shares(a: np.ndarray, given) -> bool:
    """Whether a may share memory with `given`; anything array-like but not numpy counts."""
    if isinstance(given, np.ndarray):
        return np.may_share_memory(a, given)
    if given is None or isinstance(given, (list, tuple, int, float, bool, np.generic)):
        return False  # np.asarray made a new array from Python objects
    return True  # a torch tensor or another buffer: np.asarray may have shared its memory


def _frozen(a: np.ndarray) -> bool:
    """Whether nobody can write into a's memory: it belongs to a read-only numpy array."""
    owner = a
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    return owner.base is None and not owner.flags.writeable  # no other buffer behind it


def readonly(a):
    """a, marked read-only (None passes through)."""
    if enabled and isinstance(a, np.ndarray) and a.flags.writeable:
        a.flags.writeable = False
    return a


def private(a, *given):
    """a, or a copy of it when it shares memory with any of `given`; read-only either way."""
    if a is None or not enabled or not is_grad_enabled():
        return a  # under no_grad nothing is kept for a backward: no copy
    if not _frozen(a) and any(_shares(a, g) for g in given):
        a = a.copy()
    return readonly(a)
