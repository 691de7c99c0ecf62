"""Module: parameters, buffers, children, train/eval and state dicts, as in torch.nn.Module.

Modules are thin: they own arrays and the mode, call the ops, and keep the last cache.
state_dict() walks the tree exactly as torch does (own parameters, own buffers, then each
child with a "name." prefix), so keys and order match the chapter's torch classes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class Module:
    """Base class: a tree of named parameters, buffers and child modules."""

    def __init__(self) -> None:
        object.__setattr__(self, "_children", {})
        self._param_names: list[str] = []
        self._buffer_names: list[str] = []
        self.training = True
        self._grads: dict[str, np.ndarray] = {}  # this module's own parameters only
        self._cache = None

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
        """Copy arrays (numpy, torch CPU tensors, lists) in; strict about keys and shapes.

        Each floating array keeps its own dtype, so a float64 state dict makes a float64
        module; integer arrays are converted to the dtype the entry had.
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
        new = {}
        for key, ref in own.items():
            value = state_dict[key]
            if hasattr(value, "detach"):  # a torch tensor
                value = value.detach().cpu().numpy()
            arr = np.array(value, copy=True, order="C")
            if not np.issubdtype(arr.dtype, np.floating):
                if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
                    raise TypeError(f"state_dict[{key!r}] must hold numbers, got {arr.dtype}")
                arr = arr.astype(ref.dtype)  # whole numbers take the current dtype, as in torch
            if arr.shape != ref.shape:
                raise ValueError(
                    f"state_dict[{key!r}] must have shape {tuple(ref.shape)}, got {arr.shape}"
                )
            new[key] = arr
        modules = dict(self.named_modules())
        for key, arr in new.items():
            prefix, _, name = key.rpartition(".")
            object.__setattr__(modules[f"{prefix}." if prefix else ""], name, arr)
        self._invalidate()

    def astype(self, dtype) -> Module:
        """Cast every floating parameter and buffer to dtype, in place; returns self."""
        for _, m in self.named_modules():
            for n in m._param_names + m._buffer_names:
                a = getattr(m, n)
                if np.issubdtype(a.dtype, np.floating):
                    object.__setattr__(m, n, a.astype(dtype, order="C"))
        self._invalidate()
        return self

    def train(self, mode: bool = True) -> Module:
        for _, m in self.named_modules():
            m.training = bool(mode)
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
        for _, m in self.named_modules():  # stops at the first parameter: cheap per call
            for n in m._param_names:
                return getattr(m, n).dtype
        raise AttributeError(f"{type(self).__name__} has no parameters, so no dtype")

    def _invalidate(self) -> None:
        """Drop caches that depend on parameter values (none here; subclasses may add)."""
        for _, m in self.named_modules():
            m._cache = None

    def _require_cache(self):
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward called before forward (or after the "
                f"parameters changed): run forward first"
            )
        return self._cache

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
