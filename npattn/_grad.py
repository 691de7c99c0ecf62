"""npattn.no_grad(): forwards that keep nothing for a backward, as torch.no_grad().

A forward keeps a cache for its backward: the inputs and weights the backward reads, as
private copies where the caller could change them (npattn/_guard.py). Inside no_grad():
- modules store no cache (Module._cache records only that the forward ran under no_grad, so
  a backward raises RuntimeError naming npattn.no_grad());
- ops make no copy and return None as their cache (linear, fused_linear, RMSNorm, RoPE,
  dropout, the masks, softcap, simple attention), or, where a module reads what the op
  shows (the attention ops' attn_weights and keep-mask), a cache whose backward arrays are
  None (q, k, v; the tiled op's folded columns); their backward raises the same
  RuntimeError.
A cached call (forward(x, use_cache=True)) runs under no_grad whatever the caller chose: it
is inference only.

The state is per thread (another thread's forwards keep their caches), nestable, and
no_grad() is also a decorator.
"""

from __future__ import annotations

import contextlib
import functools
import threading

import numpy as np

_state = threading.local()  # .enabled: bool (True unless set); .saved: the states no_grad replaced

NO_GRAD_FORWARD = (
    "the forward ran under npattn.no_grad() (or was a cached call, use_cache=True), which "
    "keeps nothing for a backward: run the forward outside npattn.no_grad() before backward"
)


def is_grad_enabled() -> bool:
    """False inside npattn.no_grad() in this thread, else True."""
    return getattr(_state, "enabled", True)


class no_grad(contextlib.ContextDecorator):
    """Forwards in this block (this thread only) keep no cache and make no copy.

    with npattn.no_grad():
        y = m(x)            # m.backward(dy) now raises RuntimeError

    @npattn.no_grad()
    def generate(m, x): ...
    """

    def __enter__(self):
        if not hasattr(_state, "saved"):
            _state.saved = []
        _state.saved.append(is_grad_enabled())  # per thread: one instance may nest or recurse
        _state.enabled = False
        return self

    def __exit__(self, *exc) -> bool:
        _state.enabled = _state.saved.pop()
        return False


def keep(cache):
    """cache, or None inside no_grad (what an op returns as its cache)."""
    return cache if getattr(_state, "enabled", True) else None


def require(cache, op: str):
    """cache, or RuntimeError when the forward kept none (it ran under no_grad)."""
    if cache is None:
        raise RuntimeError(f"{op}: cache is None: {NO_GRAD_FORWARD}")
    return cache


def no_grad_when_cached(forward):
    """forward, run under no_grad when called with use_cache=True (keyword or positional)."""
    names = forward.__code__.co_varnames[1 : forward.__code__.co_argcount]  # after self
    index = names.index("use_cache") if "use_cache" in names else None

    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        use_cache = kwargs.get("use_cache", False)
        if index is not None and len(args) > index:
            use_cache = args[index]
        if isinstance(use_cache, (bool, np.bool_)) and use_cache:  # a non-bool: forward says
            with no_grad():
                return forward(self, *args, **kwargs)
        return forward(self, *args, **kwargs)

    return wrapper
