"""Module: parameters, buffers, children, train/eval and state dicts, as in torch.nn.Module.

Modules are thin: they own arrays and the mode, call the ops, and keep the last cache.
state_dict() walks the tree exactly as torch does (own parameters, own buffers, then each
child with a "name." prefix), so keys and order match the chapter's torch classes.

Threads: a module keeps one cache, its last forward's. A backward in a thread whose own last
forward on the module, or on any module below it, was overwritten by another thread's forward
raises RuntimeError rather than using the other thread's data (two threads sharing one module
give wrong gradients otherwise); the whole tree is checked before any backward runs, so no
gradient is overwritten by a backward that then raises. Use one module per thread
(copy.deepcopy). A backward in a thread that ran no forward on the module uses the last
forward, whichever thread ran it.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Mapping

import numpy as np

from .. import _grad
from .._checks import check_bool, check_float_dtype, to_numpy


class _NoGrad:
    """What a forward under npattn.no_grad() stores instead of a cache: one instance, which
    copy.deepcopy and pickle keep (it is pickled by name)."""

    def __reduce__(self):
        return "_NO_GRAD"


_NO_GRAD = _NoGrad()
_forward_ids = itertools.count(1)  # every cache a forward stores gets the next number
_this_thread = threading.local()  # .last: module -> number of this thread's last forward on it


def _last_forwards() -> weakref.WeakKeyDictionary:
    if not hasattr(_this_thread, "last"):
        _this_thread.last = weakref.WeakKeyDictionary()
    return _this_thread.last


def _state_array(value, key: str, ref: np.ndarray) -> np.ndarray:
    """A state_dict entry as a C-contiguous copy in the dtype of the entry it replaces."""
    if value is None:
        raise TypeError(f"state_dict[{key!r}] must be an array, got None")
    try:
        arr = np.array(
            to_numpy(value, f"state_dict[{key!r}]"), copy=True, order="C"
        )  # torch tensors: detached, CPU
    except (TypeError, ValueError) as e:  # a ragged list, say
        raise TypeError(f"state_dict[{key!r}] must be an array of numbers: {e}") from e
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
        raise TypeError(f"state_dict[{key!r}] must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != ref.shape:
        raise ValueError(f"state_dict[{key!r}] must have shape {tuple(ref.shape)}, got {arr.shape}")
    return arr.astype(ref.dtype, copy=False)  # torch's rule: the module keeps its dtype


class Module:
    """Base class: a tree of named parameters, buffers and child modules."""

    def __init__(self) -> None:
        object.__setattr__(self, "_children", {})
        self._param_names: list[str] = []
        self._buffer_names: list[str] = []
        self.training = True
        self._grads: dict[str, np.ndarray] = {}  # this module's own parameters only
        self._drop_cache()

    def __setattr__(self, name, value):
        if isinstance(value, Module):
            self._children[name] = value
        object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def register_parameter(self, name: str, value: np.ndarray) -> None:
        self._param_names.append(name)
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, value: np.ndarray) -> None:
        self._buffer_names.append(name)
        object.__setattr__(self, name, value)

    def named_modules(self, prefix: str = ""):
        """Yield (dotted prefix, module) for self and every descendant, in torch order."""
        yield prefix, self
        for name, child in self._children.items():
            yield from child.named_modules(f"{prefix}{name}.")

    def parameters(self) -> dict[str, np.ndarray]:
        """Parameters by dotted name, like dict(torch_module.named_parameters())."""
        return {p + n: getattr(m, n) for p, m in self.named_modules() for n in m._param_names}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers by dotted name, in the order torch's state_dict uses."""
        sd = {}
        for p, m in self.named_modules():
            for n in m._param_names + m._buffer_names:
                sd[p + n] = getattr(m, n)
        return sd

    def load_state_dict(self, state_dict) -> None:
        """Copy arrays (numpy, torch tensors, lists) in; strict about keys and shapes.

        Values are cast to the dtype each entry already has, as torch's load_state_dict does:
        one float16 entry does not make a float32 module float16. To keep float64 values, make
        the module float64 first (m.astype(np.float64)). bfloat16 tensors arrive as float32.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"state_dict must be a mapping of names to arrays, got {type(state_dict).__name__}"
            )
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        extra = [k for k in state_dict if k not in own]
        if missing or extra:
            raise KeyError(f"state_dict keys do not match: missing {missing}, unexpected {extra}")
        new = {key: _state_array(state_dict[key], key, ref) for key, ref in own.items()}
        modules = dict(self.named_modules())
        for key, arr in new.items():
            prefix, _, name = key.rpartition(".")
            object.__setattr__(modules[f"{prefix}." if prefix else ""], name, arr)
        self._invalidate()

    def astype(self, dtype) -> Module:
        """Cast every floating parameter and buffer to dtype, in place; returns self.

        dtype must be a floating dtype (float16, float32, float64): an integer module would
        hold truncated weights, so anything else raises TypeError.
        """
        dtype = check_float_dtype(dtype)
        for _, m in self.named_modules():
            for n in m._param_names + m._buffer_names:
                a = getattr(m, n)
                if np.issubdtype(a.dtype, np.floating):
                    object.__setattr__(m, n, a.astype(dtype, order="C"))
        self._invalidate()
        return self

    def train(self, mode: bool = True) -> Module:
        mode = check_bool(mode, "mode")  # a string such as "no" must not count as True
        for _, m in self.named_modules():
            m.training = mode
        return self

    def eval(self) -> Module:
        return self.train(False)

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """Gradients from the last backward, keyed like parameters()."""
        return {p + n: g for p, m in self.named_modules() for n, g in m._grads.items()}

    def zero_grad(self) -> None:
        for _, m in self.named_modules():
            m._grads = {}

    @property
    def dtype(self) -> np.dtype:
        """The dtype the module computes in: that of its first parameter."""
        found = self._first_parameter()  # stops at the first parameter: cheap per call
        if found is None:
            raise AttributeError(f"{type(self).__name__} has no parameters, so no dtype")
        n, first = found
        if not isinstance(first, np.ndarray):
            raise TypeError(
                f"parameter {n!r} must be a numpy array, got {type(first).__name__} "
                f"(set parameters with load_state_dict)"
            )
        return first.dtype

    def _first_parameter(self):
        """(name, array) of the first parameter in state_dict order, or None; no generator
        over the whole tree, as `dtype` is read on every forward."""
        for n in self._param_names:
            return n, getattr(self, n)
        for child in self._children.values():
            found = child._first_parameter()
            if found is not None:
                return found
        return None

    def _invalidate(self) -> None:
        """Drop caches that depend on parameter values (none here; subclasses may add)."""
        for _, m in self.named_modules():
            m._drop_cache()

    def _drop_cache(self) -> None:
        """Forget the last forward's cache: a backward raises until the next forward."""
        self.__dict__["_cache_entry"] = (0, None)

    @property
    def _cache(self):
        """The last forward's cache (None before any forward, or after one under no_grad);
        setting it records which forward made it, so _require_cache can tell another
        thread's cache from ours. Under npattn.no_grad() (npattn/_grad.py) whatever is set
        is dropped: only the fact that the forward ran under no_grad is kept."""
        cache = self.__dict__.get("_cache_entry", (0, None))[1]
        return None if cache is _NO_GRAD else cache

    @_cache.setter
    def _cache(self, cache) -> None:
        if not _grad.is_grad_enabled():  # nothing for a backward: neither cache nor arrays
            self.__dict__["_cache_entry"] = (0, _NO_GRAD)  # checked first by _require_cache
            return
        forward_id = next(_forward_ids) if cache is not None else 0
        self.__dict__["_cache_entry"] = (forward_id, cache)  # one store: id and cache together
        if cache is not None:
            _last_forwards()[self] = forward_id
            # the children's forwards that this forward's backward will use: any forward a
            # child runs after this one (called directly, say m.out_proj(y)) replaces them
            self.__dict__["_children_forwards"] = {
                prefix: m.__dict__.get("_cache_entry", (0, None))[0]
                for prefix, m in self.named_modules()
                if m is not self
            }

    def _require_cache(self):
        forward_id, cache = self.__dict__.get("_cache_entry", (0, None))
        if cache is _NO_GRAD:
            raise RuntimeError(f"{type(self).__name__}.backward: {_grad.NO_GRAD_FORWARD}")
        if cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward called before forward (or after the "
                f"parameters changed): run forward first"
            )
        last = _last_forwards()
        for prefix, m in self.named_modules():  # self and every child, before any backward
            mine = last.get(m)  # this thread's last forward on m
            current = m.__dict__.get("_cache_entry", (0, None))[0]  # 0: none kept (no_grad,
            if mine is not None and current and current != mine:  # a fused path): skipped
                where = f" (its child {prefix[:-1]!r})" if prefix else ""
                raise RuntimeError(
                    f"{type(self).__name__}.backward: another thread's forward replaced this "
                    f"thread's cache{where} since its forward; a module keeps one cache, so use "
                    f"one module per thread (copy.deepcopy)"
                )
        recorded = self.__dict__.get("_children_forwards", {})
        for prefix, m in self.named_modules():  # every child, before any backward runs
            if m is self or prefix not in recorded:
                continue
            if m.__dict__.get("_cache_entry", (0, None))[0] != recorded[prefix]:
                raise RuntimeError(
                    f"{type(self).__name__}.backward: its child {prefix[:-1]!r} ran another "
                    f"forward since {type(self).__name__}'s forward (a call such as "
                    f"m.{prefix[:-1]}(...)), so its cache is no longer this forward's; run "
                    f"{type(self).__name__}'s forward again before its backward"
                )
        return cache

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        return ""


class ModuleList(Module):
    """Children named "0", "1", ..., like torch.nn.ModuleList."""

    def __init__(self, modules) -> None:
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __iter__(self):
        return iter(self._children.values())

    def __len__(self) -> int:
        return len(self._children)

    def __getitem__(self, i: int) -> Module:
        return list(self._children.values())[i]
