"""npattn.fast._parallel: every piece exactly once, errors raised, the same numbers whether
pieces run side by side on BLAS's threads or one after another, and BLAS's thread count put
back on every exit, also when two threads call at once (read through threadpoolctl)."""

import threading

import numpy as np
import pytest

from npattn import functional as F
from npattn.fast import _parallel


@pytest.fixture(params=["threads", "sequential"])
def mode(request, monkeypatch):
    """ "threads": BLAS set to 2 threads, so pieces really go to 2 threads (the tests run with
    OMP_NUM_THREADS=1, under which map_pieces would run them in turn); "sequential": no
    threadpoolctl, so pieces run in turn in the caller."""
    if request.param == "threads":
        threadpoolctl = pytest.importorskip("threadpoolctl")
        with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
            if _parallel.blas_threads() != 2:
                pytest.skip("this BLAS cannot be set to 2 threads")
            yield request.param
    else:
        monkeypatch.setattr(_parallel, "_blas_controller", lambda: None)
        yield request.param


def test_every_head_exactly_once(mode):
    seen, lock = [], threading.Lock()

    def one_head(h):
        with lock:
            seen.append(h)

    _parallel.map_heads(one_head, (3, 4))
    assert sorted(seen) == sorted(np.ndindex(3, 4))


def test_a_failing_head_raises_in_the_caller(mode):
    def one_head(h):
        if h == (1, 2):
            raise ValueError("head (1, 2)")

    with pytest.raises(ValueError, match=r"head \(1, 2\)"):
        _parallel.map_heads(one_head, (2, 3))


def test_causal_sdpa_gives_the_same_numbers_either_way(monkeypatch):
    pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 70, 8)).astype(np.float32) for _ in range(3))
    g = rng.standard_normal((2, 3, 70, 8)).astype(np.float32)

    def run():
        out, cache = F.causal_sdpa_forward(q, k, v, 0.3, rng=1, block_size=32)
        return (out, *F.causal_sdpa_backward(g, cache))

    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        threaded = run()  # heads on 2 threads
    monkeypatch.setattr(_parallel, "_blas_controller", lambda: None)
    for a, b in zip(threaded, run()):
        np.testing.assert_array_equal(a, b)


def blas_counts(threadpoolctl):
    libs = threadpoolctl.threadpool_info()
    return [lib["num_threads"] for lib in libs if lib["user_api"] == "blas"]


@pytest.fixture
def two_blas_threads():
    """BLAS set to 2 threads for the test (the symptom: a later big matmul left on 1)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        if not blas_counts(threadpoolctl) or set(blas_counts(threadpoolctl)) != {2}:
            pytest.skip("this BLAS cannot be set to 2 threads")
        yield threadpoolctl


def test_two_threads_at_once_leave_the_blas_thread_count_as_it_was(two_blas_threads):
    # both callers are inside map_heads together: each head waits for the other caller's
    barrier = threading.Barrier(2)
    inside = []

    def one_head(h):
        if h == (0,):
            barrier.wait(timeout=10)  # one head of each call meets one of the other call
            inside.append(blas_counts(two_blas_threads))

    def call():
        for _ in range(3):
            _parallel.map_heads(one_head, (2,))
            barrier.wait(timeout=10)  # both calls leave before the next round starts

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert inside and all(set(c) == {1} for c in inside)  # BLAS on one thread while inside
    assert blas_counts(two_blas_threads) == [2] * len(blas_counts(two_blas_threads))


def test_an_exception_inside_restores_the_blas_thread_count(two_blas_threads):
    def one_head(h):
        raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        _parallel.map_heads(one_head, (2, 2))
    assert set(blas_counts(two_blas_threads)) == {2}


def test_blas_threads_reports_the_users_count_while_pieces_run(two_blas_threads):
    seen = []
    _parallel.map_heads(lambda h: seen.append(_parallel.blas_threads()), (2,))
    assert seen == [2, 2]


@pytest.mark.parametrize("heads", [1, 3])
def test_tiled_gives_the_same_numbers_on_every_run_and_either_way(heads, monkeypatch):
    pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(0)
    q, k, v, g = (rng.standard_normal((heads, 70, 8)).astype(np.float32) for _ in range(4))

    def run():
        out, cache = F.flash_attention_forward(q, k, v, is_causal=True, block_size=16)
        return (out, *F.flash_attention_backward(g, cache))

    first, second = run(), run()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)  # no dependence on which thread took which piece
    monkeypatch.setattr(_parallel, "_blas_controller", lambda: None)
    for a, b in zip(first, run()):  # one thread: the same pieces, summed in the same order
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "M, N", [(1, 5), (255, 5), (256, 5), (511, 5), (512, 5), (513, 5), (1000, 5), (5, 600)]
)
def test_split_matmul_equals_the_product(M, N, mode, monkeypatch):
    pieces = []
    map_pieces = _parallel.map_pieces

    def spy(work, parts, workers):
        pieces.append(len(list(parts)))
        return map_pieces(work, parts, workers)

    monkeypatch.setattr(_parallel, "map_pieces", spy)
    rng = np.random.default_rng(M)
    a, b = rng.standard_normal((M, 7)), rng.standard_normal((7, N))
    np.testing.assert_allclose(_parallel.split_matmul(a, b), a @ b, rtol=1e-13, atol=1e-13)
    at = rng.standard_normal((7, M)).T  # a transposed view, as dout^T in the backward
    np.testing.assert_allclose(_parallel.split_matmul(at, b), at @ b, rtol=1e-13, atol=1e-13)
    split = mode == "threads" and max(M, N) >= 2 * _parallel.MIN_PIECE
    assert pieces == ([2, 2] if split else [])  # one part per thread, or one product


def test_split_matmul_keeps_numpys_dtype_rule():
    a, b = np.ones((600, 3), np.float32), np.ones((3, 2), np.float64)
    assert _parallel.split_matmul(a, b).dtype == np.float64
    assert _parallel.split_matmul(a, b.astype(np.float32)).dtype == np.float32


def test_fast_path_products_never_run_on_blas_threads(two_blas_threads, monkeypatch):
    """Every np.matmul of MultiHeadAttention's blocked path runs with BLAS on one thread
    (after a threaded product OpenBLAS's threads spin, and would slow the attention threads),
    and BLAS's count is 2 again afterwards."""
    import npattn

    counts = []
    matmul = np.matmul

    def spy(*args, **kwargs):
        counts.append(_parallel._blas_count(_parallel._blas_libs()))
        return matmul(*args, **kwargs)

    def reference_linear(*args, **kwargs):  # its `@` would run on BLAS's threads
        raise AssertionError("a Linear child ran its own product on the fast path")

    m = npattn.MultiHeadAttention(16, 16, 600, 0.0, 2, attn_impl="blocked", rng=0)
    x, g = np.random.default_rng(0).standard_normal((2, 1, 600, 16))
    monkeypatch.setattr(np, "matmul", spy)
    for name in ("linear_forward", "linear_backward"):
        monkeypatch.setattr(f"npattn.modules.linear.{name}", reference_linear)
    m(x)
    m.backward(g)
    monkeypatch.undo()
    assert len(counts) > 10 and set(counts) == {1}
    assert set(blas_counts(two_blas_threads)) == {2}
