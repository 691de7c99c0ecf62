"""Input validation shared by the ops and modules.

Every public entry point turns bad input into a ValueError/TypeError that names the argument
and the expected shape, rather than letting an error leak out of numpy internals.
"""

from __future__ import annotations

import math
import numbers
import os

import numpy as np


def to_numpy(x):
    """x itself, or a torch tensor as a numpy array: detached, on the CPU, bfloat16 as float32.

    torch's .numpy() refuses a tensor that requires grad; npattn reads its values (as
    .detach() would), since the values are what npattn computes with. numpy has no bfloat16,
    so bfloat16 becomes float32, which holds every bfloat16 value exactly.
    """
    if type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    return x


def as_array(x, name: str) -> np.ndarray:
    """x as an ndarray (a torch tensor through to_numpy), or a TypeError naming it."""
    try:
        arr = np.asarray(to_numpy(x))
    except (TypeError, ValueError) as e:  # e.g. a ragged list
        raise TypeError(f"{name} must be an array, got {type(x).__name__}: {e}") from e
    if arr.dtype == object:
        raise TypeError(f"{name} must be an array of numbers or booleans, got dtype object")
    return arr


def as_float_array(x, name: str, dtype=None) -> np.ndarray:
    """Return x as a floating ndarray (no copy when it already is one)."""
    x = to_numpy(x)
    if isinstance(x, np.ndarray) and dtype is None:
        arr = x
    else:
        try:
            arr = np.asarray(x, dtype=dtype)
        except (TypeError, ValueError, OverflowError) as e:
            raise TypeError(f"{name} must be an array of numbers, got {type(x).__name__}") from e
    if not np.issubdtype(arr.dtype, np.floating):
        if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
            arr = arr.astype(np.float64)
        else:
            raise TypeError(f"{name} must hold floating-point numbers, got dtype {arr.dtype}")
    return arr


def check_ndim(x: np.ndarray, name: str, ndims, shape_desc: str) -> None:
    """Raise ValueError unless x.ndim is one of ndims."""
    ndims = (ndims,) if isinstance(ndims, int) else tuple(ndims)
    if x.ndim not in ndims:
        raise ValueError(
            f"{name} must have shape {shape_desc} ({' or '.join(map(str, ndims))}-D), "
            f"got shape {tuple(x.shape)}"
        )


def check_min_ndim(x: np.ndarray, name: str, ndim: int, shape_desc: str) -> None:
    if x.ndim < ndim:
        raise ValueError(
            f"{name} must have shape {shape_desc} (at least {ndim}-D), got shape {tuple(x.shape)}"
        )


def as_grad(d, ref_shape, dtype, name: str = "dout") -> np.ndarray:
    """An upstream gradient as an array of the forward's dtype, checked against its shape.

    Gradients follow the dtype the forward computed in, whatever dtype dout arrives in.
    """
    d = as_float_array(d, name)
    if d.shape != tuple(ref_shape):
        raise ValueError(
            f"{name} must have the forward output's shape {tuple(ref_shape)}, got {d.shape}"
        )
    return d.astype(dtype, copy=False)


def _is_real(x) -> bool:
    """A real number, not a bool or a string: float('0.1') and float(True) must not pass."""
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def check_probability(p, name: str) -> float:
    """Return p as a float in [0, 1], else raise TypeError/ValueError.

    p = 1 is allowed, as in torch: everything is dropped and the output is 0.
    """
    if not _is_real(p):
        raise TypeError(f"{name} must be a float in [0, 1], got {p!r}")
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {p}")
    return p


def check_positive_int(n, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    return int(n)


def make_rng(rng) -> np.random.Generator:
    """A numpy Generator from a Generator, a seed, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        if rng < 0:
            raise ValueError(f"rng must be a seed >= 0 (or a Generator or None), got {rng}")
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None, got {rng!r}")


def check_axis(axis, x: np.ndarray, name: str = "axis") -> int:
    """An int axis of x, else a ValueError naming it and x's shape."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {axis!r}")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{name}={axis} is out of range for an array of shape {x.shape}")
    return int(axis)


def check_scale(scale, head_dim: int) -> float:
    """The attention scale: 1 / sqrt(E) by default, else a finite float."""
    if head_dim < 1:
        raise ValueError(f"the head dim E of query and key must be >= 1, got {head_dim}")
    if scale is None:
        return 1.0 / float(np.sqrt(head_dim))
    if not _is_real(scale):
        raise TypeError(f"scale must be a float or None, got {scale!r}")
    scale = float(scale)
    if not np.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return scale


def check_bool(flag, name: str) -> bool:
    """A bool (or numpy bool), else TypeError: a string such as "no" must not count as True."""
    if not isinstance(flag, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {flag!r}")
    return bool(flag)


def physical_memory_bytes() -> int | None:
    """The machine's memory, or None where the OS does not say (not POSIX)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_allocation(shape, itemsize: int, name: str, what: str) -> None:
    """Raise ValueError naming `name` before making an array larger than the machine's memory."""
    nbytes = itemsize * math.prod(int(n) for n in shape)
    memory = physical_memory_bytes()
    if memory is not None and nbytes > memory:
        raise ValueError(
            f"{name} asks for {what} of shape {tuple(shape)}: {nbytes / 2**30:.1f} GiB, more "
            f"than this machine's {memory / 2**30:.1f} GiB of memory"
        )
