"""Shared Hypothesis strategies: shapes, arrays, masks and seeds for every test file."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

seeds = st.integers(0, 2**32 - 1)
dims = st.integers(1, 6)
small_dims = st.integers(1, 4)


def floats(dtype=np.float64, bound: float = 3.0):
    """Finite, moderate floats: attention tests are about structure, not overflow."""
    width = 32 if dtype == np.float32 else 64
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=width)


def arrays(shape, dtype=np.float64, bound: float = 3.0):
    """A float array of the given shape (or shape strategy) with moderate values."""
    return hnp.arrays(dtype, shape, elements=floats(dtype, bound))


def batch_shapes(min_dims: int = 0, max_dims: int = 2):
    """Leading batch dims, e.g. (), (B,), (B, H)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=3)


@st.composite
def sdpa_inputs(draw, dtype=np.float64, gqa: bool = False, min_batch_dims: int = 0):
    """(q, k, v) with shapes (..., L, E), (..., S, E), (..., S, Ev); heads on axis -3 for GQA."""
    L, S, E, Ev = draw(dims), draw(dims), draw(dims), draw(dims)
    if gqa:
        batch = draw(batch_shapes(0, 1))
        hkv = draw(small_dims)
        hq = hkv * draw(small_dims)
        qb, kb = batch + (hq,), batch + (hkv,)
    else:
        qb = kb = draw(batch_shapes(min_batch_dims, 2))
    q = draw(arrays(qb + (L, E), dtype))
    k = draw(arrays(kb + (S, E), dtype))
    v = draw(arrays(kb + (S, Ev), dtype))
    return q, k, v


@st.composite
def broadcastable_shape(draw, shape):
    """A shape that broadcasts to `shape`: some leading dims dropped, some sides set to 1."""
    keep = draw(st.integers(2, len(shape)))
    tail = shape[len(shape) - keep :]
    return tuple(1 if draw(st.booleans()) and i < keep - 2 else n for i, n in enumerate(tail))


@st.composite
def bool_masks(draw, shape):
    """A boolean mask (True = attend) broadcastable to `shape`, with some fully masked rows."""
    mshape = draw(broadcastable_shape(shape))
    return draw(hnp.arrays(np.bool_, mshape))


@st.composite
def float_masks(draw, shape, dtype=np.float64):
    """An additive float mask broadcastable to `shape`: finite values and some -inf."""
    mshape = draw(broadcastable_shape(shape))
    elements = st.one_of(floats(dtype, 3.0), st.just(-np.inf))
    return draw(hnp.arrays(dtype, mshape, elements=elements))


@st.composite
def attention_configs(draw, square: bool = False, max_heads: int = 3):
    """Arguments of a chapter attention module and an input size: d_in, d_out (a multiple of
    num_heads), num_heads, context_length, T <= context_length, B, qkv_bias, seed.
    square=True makes d_in == d_out (nn.MultiheadAttention needs it)."""
    num_heads = draw(st.integers(1, max_heads))
    d_out = num_heads * draw(st.integers(1, 4))
    d_in = d_out if square else draw(dims)
    context_length = draw(st.integers(1, 6))
    return dict(
        d_in=d_in,
        d_out=d_out,
        num_heads=num_heads,
        context_length=context_length,
        T=draw(st.integers(1, context_length)),
        B=draw(st.integers(1, 3)),
        qkv_bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


def block_sizes():
    """Tiled attention's block_size: an int or a (Br, Bc) pair, often not dividing L or S."""
    return st.one_of(st.integers(1, 7), st.tuples(st.integers(1, 7), st.integers(1, 7)))


@st.composite
def causal_inputs(draw, dtype=np.float64, max_side: int = 7):
    """(q, k, v) sharing their leading dims: (..., L, E), (..., S, E), (..., S, Ev), L != S too."""
    L, S = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    E, Ev = draw(small_dims), draw(small_dims)
    lead = draw(batch_shapes(0, 2))
    q = draw(arrays(lead + (L, E), dtype))
    k = draw(arrays(lead + (S, E), dtype))
    v = draw(arrays(lead + (S, Ev), dtype))
    return q, k, v


def constructor_args(name: str, cfg: dict, dropout: float = 0.0) -> tuple:
    """The chapter constructor's positional arguments for class `name` from attention_configs.

    The wrapper's d_out is per head, so it gets d_out // num_heads (same total width).
    """
    d_in, d_out, cl, h, bias = (
        cfg[k] for k in ("d_in", "d_out", "context_length", "num_heads", "qkv_bias")
    )
    return {
        "SelfAttention_v1": (d_in, d_out),
        "SelfAttention_v2": (d_in, d_out, bias),
        "CausalAttention": (d_in, d_out, cl, dropout, bias),
        "MultiHeadAttentionWrapper": (d_in, d_out // h, cl, dropout, h, bias),
        "MultiHeadAttention": (d_in, d_out, cl, dropout, h, bias),
    }[name]


@st.composite
def modern_configs(draw):
    """Sizes and options of the modern classes and the cached MultiHeadAttention: G key/value
    heads, H = G * group size query heads, head dim E (Qwen3 uses 2E: RoPE needs it even),
    latent C, window W (None = causal), qkv_bias (Qwen3: qk_norm), RoPE base, seed."""
    G = draw(st.integers(1, 3))
    return dict(
        B=draw(st.integers(1, 2)),
        T=draw(st.integers(1, 6)),
        d_in=draw(st.integers(1, 5)),
        G=G,
        H=G * draw(st.integers(1, 2)),
        E=draw(st.integers(1, 3)),
        C=draw(st.integers(1, 4)),
        W=draw(st.one_of(st.none(), st.integers(1, 7))),
        bias=draw(st.booleans()),
        rope_base=draw(st.sampled_from([10.0, 10_000.0, 1_000_000.0])),
        context_length=8,
        seed=draw(st.integers(0, 2**16)),
    )


def modern_constructor_args(name: str, cfg: dict, dropout: float = 0.0) -> tuple:
    """(args, kwargs) of class `name` from modern_configs, the same for npattn and torch_port
    (add rng= or dtype=)."""
    d_in, G, H, E, bias = (cfg[k] for k in ("d_in", "G", "H", "E", "bias"))
    if name == "Qwen3Attention":
        kwargs = dict(rope_base=cfg["rope_base"], context_length=cfg["context_length"])
        kwargs["rope_freq_config"] = None
        return (d_in, H, G, 2 * E, bias), kwargs
    return {
        "GroupedQueryAttention": (d_in, H * E, dropout, H, G, bias),
        "MultiHeadLatentAttention": (d_in, H * E, dropout, H, bias, cfg["C"]),
        "MultiHeadAttentionWithSWA": (d_in, H * E, dropout, H, bias, cfg["W"]),
        "MultiHeadAttention": (d_in, H * E, cfg["context_length"], dropout, H, bias),
    }[name], {}


@st.composite
def chunk_sizes(draw, T: int):
    """Chunk sizes summing to T for cached decoding: all ones, all twos, or random."""
    kind = draw(st.sampled_from(["ones", "twos", "random"]))
    if kind == "ones":
        return [1] * T
    if kind == "twos":
        return [2] * (T // 2) + [1] * (T % 2)
    sizes, rest = [], T
    while rest:
        sizes.append(draw(st.integers(1, rest)))
        rest -= sizes[-1]
    return sizes
