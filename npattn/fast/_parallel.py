"""Independent heads on all of BLAS's threads: each thread takes whole heads.

numpy's BLAS splits every matrix product over its threads. For the many small products of
one head's blocks the threads spend much of their time waiting for each other, and on a
machine shared with other programs far more (a waiting thread may lose its core). Heads are
independent, so the threads can instead take whole heads, while BLAS runs each product on one
thread: the same number of threads, and no waiting inside the products.

This needs threadpoolctl to set BLAS's thread count; without it, or with one BLAS thread, the
heads run one after another in the calling thread. The numbers are the same either way: each
head reads its own inputs and writes its own slices of the outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_controller = None  # threadpoolctl.ThreadpoolController, made on first use (it scans libraries)


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


def blas_threads() -> int:
    """The threads heads can run on side by side: BLAS's thread count, via threadpoolctl.

    Without threadpoolctl the count cannot be read or limited, so heads run one after another
    and this is 1 (the safe answer: nothing is planned on threads that map_heads will not use).
    """
    blas = _blas_controller()
    return max((lib["num_threads"] for lib in blas.info()), default=1) if blas else 1


def map_heads(one_head: Callable[[tuple], None], lead: tuple) -> None:
    """Call one_head(h) for every index h of the leading (head) dims `lead`.

    one_head must only write outputs that belong to head h.
    """
    heads = list(np.ndindex(*lead))
    workers = min(len(heads), blas_threads()) if len(heads) > 1 else 1
    if workers < 2:
        for h in heads:
            one_head(h)
        return
    with _blas_controller().limit(limits=1), ThreadPoolExecutor(workers) as pool:
        list(pool.map(one_head, heads))  # list(): re-raises a worker's exception here
