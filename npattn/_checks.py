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
    if type(x) is np.ndarray and x.dtype.kind == "f" and (dtype is None or x.dtype == dtype):
        return x  # already what is asked for: no conversion, no check to make (decoding)
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


def check_real(x, name: str, what: str = "a float") -> float:
    """x as a float, else TypeError: a string, bool or array must not pass as a number."""
    if not _is_real(x):
        raise TypeError(f"{name} must be {what}, got {x!r}")
    return float(x)


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


# what the attention scores' and weights' shape (..., L, S) is made of, for the messages: a
# mask that does not fit may be the mask's fault or that of query and key
SCORES_DIMS = " (the batch dims of query and key, L, S)"


def check_broadcasts(a: np.ndarray, shape: tuple, name: str, target: str, dims: str = "") -> None:
    """Raise ValueError unless a broadcasts to exactly `shape` (that of `target`, made of
    `dims`, which the message adds after the shape)."""
    try:
        fits = np.broadcast_shapes(a.shape, tuple(shape)) == tuple(shape)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{name} of shape {tuple(a.shape)} does not broadcast to {target} of shape "
            f"{tuple(shape)}{dims}"
        )


def check_bool_mask(
    mask,
    shape: tuple,
    name: str = "mask",
    target: str = "x",
    meaning: str = "True = attend",
    dims: str = "",
) -> np.ndarray:
    """A boolean mask that broadcasts to `shape`, else a TypeError/ValueError naming it.

    Used for attention masks (True = attend) and dropout keep-masks (True = kept).
    """
    mask = as_array(mask, name)
    if mask.dtype != np.bool_:
        raise TypeError(f"{name} must be boolean ({meaning}), got dtype {mask.dtype}")
    check_broadcasts(mask, shape, name, target, dims)
    return mask


def check_attn_mask(attn_mask, is_causal: bool, scores_shape: tuple):
    """SDPA's attn_mask: None, or boolean (True = attend) or float (added), broadcastable to
    the scores. Shapes: attn_mask broadcastable to scores_shape (..., L, S)."""
    if check_bool(is_causal, "is_causal") and attn_mask is not None:
        raise ValueError("is_causal=True cannot be combined with attn_mask; pass one of them")
    if attn_mask is None:
        return None
    attn_mask = as_array(attn_mask, "attn_mask")
    if attn_mask.dtype == np.bool_:
        return check_bool_mask(
            attn_mask, scores_shape, "attn_mask", "the attention scores", dims=SCORES_DIMS
        )
    if not np.issubdtype(attn_mask.dtype, np.floating):
        raise TypeError(f"attn_mask must be boolean or floating, got dtype {attn_mask.dtype}")
    check_broadcasts(attn_mask, scores_shape, "attn_mask", "the attention scores", SCORES_DIMS)
    return attn_mask


def check_qkv(q, k, v):
    """query, key and value as arrays of one floating dtype (numpy's promotion of the three).

    Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev); L, S, E >= 1, batch dims may be 0.
    """
    q, k, v = as_float_array(q, "query"), as_float_array(k, "key"), as_float_array(v, "value")
    check_min_ndim(q, "query", 2, "(..., L, E)")
    check_min_ndim(k, "key", 2, "(..., S, E)")
    check_min_ndim(v, "value", 2, "(..., S, Ev)")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"query and key must share the head dim E: query (..., L, {q.shape[-1]}), "
            f"key (..., S, {k.shape[-1]})"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"key and value must have the same number of tokens S: key {tuple(k.shape)}, "
            f"value {tuple(v.shape)}"
        )
    for name, a, dims in (("query", q, "L, E"), ("key", k, "S, E"), ("value", v, "S, Ev")):
        if 0 in a.shape[-2:]:  # empty batch dims are fine: empty outputs, as in torch
            raise ValueError(
                f"{name} needs at least one token and a head dim >= 1: shape (..., {dims}), "
                f"got {a.shape}"
            )
    dtype = np.result_type(q.dtype, k.dtype, v.dtype)
    return tuple(a.astype(dtype, copy=False) for a in (q, k, v))


def check_sdpa_inputs(q, k, v, enable_gqa: bool):
    """check_qkv, plus GQA's head counts and broadcastable batch dims: (q, k, v, groups).

    Shapes: q (..., Hq, L, E), k and v (..., Hkv, S, E|Ev) with enable_gqa; groups = Hq // Hkv.
    """
    q, k, v = check_qkv(q, k, v)
    groups = 1
    if check_bool(enable_gqa, "enable_gqa"):
        if q.ndim < 3 or k.ndim < 3 or v.ndim < 3:
            raise ValueError("enable_gqa needs heads on axis -3: shapes (..., H, L, E)")
        hq, hk, hv = q.shape[-3], k.shape[-3], v.shape[-3]
        if hk != hv or hq % hk:
            raise ValueError(
                f"enable_gqa needs key and value heads equal and dividing the query heads: "
                f"query has {hq}, key {hk}, value {hv}"
            )
        groups = hq // hk
    for name, a in (("key", k), ("value", v)):
        batch = a.shape[:-2]  # (..., H) of k or v; GQA multiplies H by the group size
        if groups > 1:
            batch = batch[:-1] + (batch[-1] * groups,)
        try:
            np.broadcast_shapes(q.shape[:-2], batch)
        except ValueError:
            raise ValueError(
                f"batch dims of query {tuple(q.shape[:-2])} and {name} {tuple(a.shape[:-2])} "
                f"do not broadcast"
            ) from None
    return q, k, v, groups


def check_dropout_mask(dropout_mask, dropout_p: float, shape: tuple):
    """SDPA's dropout_mask: None, or a boolean keep-mask broadcastable to the weights' shape.

    Shapes: dropout_mask broadcastable to shape (..., L, S).
    """
    if dropout_mask is None:
        return None
    if dropout_p == 0.0:
        raise ValueError("dropout_mask needs dropout_p > 0 (it is scaled by 1 / (1 - dropout_p))")
    return check_bool_mask(
        dropout_mask,
        shape,
        "dropout_mask",
        "the attention weights",
        "a keep-mask, True = kept",
        SCORES_DIMS,
    )
