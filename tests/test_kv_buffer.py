"""KVBuffer, the cache's storage: it holds exactly the positions np.concatenate would (the last
W with a window), grows geometrically, never overwrites a position handed out, and a call
that fails after writing its chunk leaves the cache as it was.
Shapes: cached arrays (B, G, S, E) (sequence axis 2) or (B, S, C) (axis 1)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_kv_cache import EXACT, make, snapshot

from npattn.modules._kv_buffer import MIN_CAPACITY, KVBuffer

windows = st.sampled_from([None, 1, 2, 3, 5])


@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=12),
    window=windows,
    axis=st.sampled_from([1, 2]),
)
def test_buffer_holds_what_concatenation_would(sizes, window, axis):
    rng = np.random.default_rng(len(sizes))
    buf = KVBuffer(2, axis, window)
    seen_k, seen_v, views = [], [], []
    for T in sizes:
        shape = (2, T, 3) if axis == 1 else (2, 2, T, 3)
        k, v = rng.standard_normal(shape), rng.standard_normal(shape)
        seen_k.append(k)
        seen_v.append(v)
        all_k = np.concatenate(seen_k, axis=axis)
        all_v = np.concatenate(seen_v, axis=axis)
        n_all = all_k.shape[axis]
        attend_k, attend_v = buf.stage(k, v)
        n_attend = n_all if window is None else min(n_all, window + T - 1)
        last = range(n_all - n_attend, n_all)
        np.testing.assert_array_equal(attend_k, np.take(all_k, last, axis))
        np.testing.assert_array_equal(attend_v, np.take(all_v, last, axis))
        buf.commit()
        n_held = n_all if window is None else min(n_all, window)
        last = range(n_all - n_held, n_all)
        np.testing.assert_array_equal(buf.held(0), np.take(all_k, last, axis))
        np.testing.assert_array_equal(buf.held(1), np.take(all_v, last, axis))
        assert buf.nbytes == 2 * all_k.nbytes // n_all * n_held
        assert buf.allocated_nbytes >= buf.nbytes
        views.append((buf.held(0), buf.held(0).copy()))
    for view, values in views:  # positions handed out are never overwritten
        np.testing.assert_array_equal(view, values)


def test_one_token_appends_grow_geometrically():
    """Without a window: at most log2(N) reallocations and under twice the held bytes; with a
    window W the storage stays within about 2 W positions, whatever N."""
    N = 300
    x = np.zeros((1, 2, 1, 4))
    for window, bound in ((None, 2 * N), (7, 2 * 7)):
        buf, storages = KVBuffer(2, 2, window), set()
        for _ in range(N):
            buf.stage(x, x)
            buf.commit()
            storages.add(id(buf.arrays[0]))
            assert buf.capacity <= max(bound, MIN_CAPACITY)
        if window is None:
            assert len(storages) <= np.log2(N / MIN_CAPACITY) + 2
            assert buf.allocated_nbytes < 2 * buf.nbytes
        else:  # a copy of W - 1 positions at most once per W + 1 tokens
            assert len(storages) <= N / (window + 1) + 1


def test_a_failure_after_the_chunk_is_written_leaves_the_cache_unchanged():
    m = make("MultiHeadAttentionWithSWA", window=3)
    x = np.random.default_rng(0).standard_normal((2, 9, 5))
    full = m(x)
    out = [m(x[:, :4], use_cache=True)]
    before = snapshot(m)

    def broken(*args):
        raise FloatingPointError("out_proj failed")

    m.out_proj.forward = broken  # fails after the chunk's keys were written into the storage
    with pytest.raises(FloatingPointError):
        m(x[:, 4:6], use_cache=True)
    del m.out_proj.forward
    ptr, arrays = snapshot(m)
    assert ptr == before[0]
    for a, b in zip(arrays, before[1]):
        np.testing.assert_array_equal(a, b)
    out += [m(x[:, 4:6], use_cache=True), m(x[:, 6:], use_cache=True)]  # and decoding goes on
    np.testing.assert_allclose(np.concatenate(out, axis=1), full, **EXACT)


@pytest.mark.parametrize(
    "name", ["GroupedQueryAttention", "MultiHeadLatentAttention", "Qwen3Attention"]
)
def test_cache_attributes_are_read_only_views_and_bytes_are_reported_both_ways(name):
    m = make(name)
    x = np.random.default_rng(0).standard_normal((1, 5, 5))
    for i in range(5):
        m(x[:, i : i + 1], use_cache=True)
    for attr in m._kv_names:
        a = getattr(m, attr)
        assert a.base is not None and not a.flags.writeable
        with pytest.raises(AttributeError, match="read-only"):
            setattr(m, attr, None)
    held = sum(getattr(m, a).nbytes for a in m._kv_names)
    assert m.cache_nbytes == held <= m.cache_allocated_nbytes
    if name == "Qwen3Attention":  # never more storage than context_length positions
        assert m.cache_allocated_nbytes == held * m.context_length // 5
    m.reset_cache()
    assert m.cache_nbytes == m.cache_allocated_nbytes == 0
