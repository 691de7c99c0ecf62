"""Independent pieces of work on all of BLAS's threads: each thread takes whole pieces.

numpy's BLAS splits every matrix product over its threads. For the many small products of
one head's blocks the threads spend much of their time waiting for each other, and on a
machine shared with other programs far more (a waiting thread may lose its core). numpy's
elementwise passes (exp, max, ...) run on one thread whatever BLAS does. Heads, and row or
key blocks within a head, are independent, so Python threads can instead take whole pieces,
one after another from a shared queue (a thread slowed by another program simply takes fewer),
while BLAS runs each product on one thread: the same number of threads, no waiting inside the
products, and the elementwise passes in parallel too (numpy releases the GIL in both).

BLAS's thread count is one number for the whole process. It is set to 1 by the first caller
to enter and restored by the last to leave (a lock and a count of callers inside), on every
exit, exceptions included; two threads calling at once therefore cannot leave it at 1. While
any call is inside, other BLAS work in the process also runs on one thread.

This needs threadpoolctl; without it, or with one BLAS thread, the pieces run one after
another in the calling thread. The numbers are the same either way: each piece reads its own
inputs and writes its own slices of the outputs (or its worker's own buffer).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

_controller = None  # threadpoolctl.ThreadpoolController, made on first use (it scans libraries)
_limit_lock = threading.Lock()  # guards the two names below
_callers_inside = 0  # calls between entering and leaving one_blas_thread
_original_threads = 1  # BLAS's thread count before the first caller set it to 1


def _blas_controller():
    global _controller
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _controller = False
        else:
            _controller = ThreadpoolController().select(user_api="blas")
    return _controller or None


def _blas_libs() -> list:
    """threadpoolctl's controller of each BLAS library numpy loaded; [] without threadpoolctl."""
    blas = _blas_controller()
    return [] if blas is None else list(blas.lib_controllers)


def _blas_count(libs) -> int:
    return max((lib.get_num_threads() or 1 for lib in libs), default=1)


def _set_blas_count(libs, n: int) -> None:
    """Set every BLAS library's (process-wide) thread count to n, from whichever thread calls.

    threadpoolctl >= 3.8 ignores set_num_threads on OpenBLAS's pthreads layer except from one
    "controlling" thread, to stop Python threads fighting over the shared pool; our own lock
    and count serialize the changes already, so its unguarded setter is used where it exists.
    """
    for lib in libs:
        getattr(lib, "_real_set_num_threads", lib.set_num_threads)(n)


def blas_threads() -> int:
    """The threads pieces can run on side by side: BLAS's thread count as the user set it.

    Not the 1 set while pieces run. Without threadpoolctl the count cannot be read or limited,
    so pieces run one after another and this is 1 (nothing is planned on threads that
    map_pieces will not use).
    """
    with _limit_lock:
        return _original_threads if _callers_inside else _blas_count(_blas_libs())


def worker_count(n_pieces: int) -> int:
    """How many threads map_pieces uses for n_pieces: BLAS's count, at most one per piece."""
    return max(1, min(n_pieces, blas_threads()))


@contextmanager
def one_blas_thread():
    """BLAS on one thread inside the block; the last caller to leave restores the original.

    The first caller to enter saves the count and sets 1; later callers find 1 already set.
    """
    global _callers_inside, _original_threads
    libs = _blas_libs()
    with _limit_lock:
        if _callers_inside == 0:
            _original_threads = _blas_count(libs)
            _set_blas_count(libs, 1)
        _callers_inside += 1
    try:
        yield
    finally:
        with _limit_lock:
            _callers_inside -= 1
            if _callers_inside == 0:
                _set_blas_count(libs, _original_threads)


def map_pieces(work: Callable[[int, object], None], pieces: Iterable, workers: int) -> None:
    """Call work(worker, piece) for every piece, on `workers` threads (worker in range(workers)).

    Each thread takes the next piece from a shared queue, so list the costly pieces first.
    work must only write outputs that belong to its piece, or to its worker's own buffers.
    The first exception raised by a piece is raised here, after the threads have stopped.
    """
    pieces = list(pieces)
    if workers < 2 or len(pieces) < 2 or _blas_controller() is None:
        for piece in pieces:
            work(0, piece)
        return
    queue, lock, failed, done = iter(pieces), threading.Lock(), [], object()

    def worker(w: int) -> None:
        while not failed:
            with lock:
                piece = next(queue, done)
            if piece is done:
                return
            try:
                work(w, piece)
            except BaseException:
                failed.append(True)  # the other threads stop taking pieces
                raise

    with one_blas_thread(), ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(worker, w) for w in range(workers)]
    for f in futures:
        f.result()  # re-raises a worker's exception in the caller


def map_heads(one_head: Callable[[tuple], None], lead: tuple) -> None:
    """Call one_head(h) for every index h of the leading (head) dims `lead`.

    one_head must only write outputs that belong to head h.
    """
    heads = list(np.ndindex(*lead))
    map_pieces(lambda _, h: one_head(h), heads, worker_count(len(heads)))


MIN_PIECE = 256  # split_matmul gives each thread at least this many rows (or columns)


def split_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b split evenly over BLAS's threads, each part an ordinary product on one thread.

    Shapes: a (M, K), b (K, N) -> (M, N). The split is by a's rows, or, when there are too
    few rows for two parts and b has more columns, by b's columns (the weight gradient
    dout^T @ x of a narrow layer has few rows).
    Why not let BLAS split the product itself: after a threaded product, OpenBLAS's own
    threads keep spinning on their cores for a while (about a quarter of a second here:
    benchmarks/blas_spin.py), waiting for more work, and the attention's threads, which
    start next, would share the cores with them. Measured here, that cost
    MultiHeadAttention's attention steps about a third more time. With every product of a
    fast path split here, BLAS never starts its own threads there; each part runs as fast
    as BLAS's own split.
    One part per thread, so the split, and the last bits of the result, can differ with the
    thread count, as BLAS's own split can.
    """
    (M, _), N = a.shape, b.shape[1]
    by_rows = M >= min(N, 2 * MIN_PIECE)
    workers = worker_count(max(1, max(M, N) // MIN_PIECE))
    if workers < 2:  # one thread's worth: one product, BLAS's threads not started
        with one_blas_thread():
            return np.matmul(a, b)
    out = np.empty((M, N), np.result_type(a, b))
    size = M if by_rows else N
    bounds = [size * w // workers for w in range(workers + 1)]

    def piece(_, w):
        part = slice(bounds[w], bounds[w + 1])
        if by_rows:
            np.matmul(a[part], b, out=out[part])  # (rows, K) @ (K, N) -> (rows, N)
        else:
            np.matmul(a, b[:, part], out=out[:, part])  # (M, K) @ (K, cols) -> (M, cols)

    map_pieces(piece, range(workers), workers)
    return out
