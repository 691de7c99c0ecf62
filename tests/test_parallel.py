"""npattn.fast._parallel.map_heads: every head exactly once, errors raised, and the same numbers
whether heads run side by side on BLAS's threads or one after another."""

import threading

import numpy as np
import pytest

from npattn import functional as F
from npattn.fast import _parallel


@pytest.fixture(params=["threads", "sequential"])
def mode(request, monkeypatch):
    if request.param == "threads":
        pytest.importorskip("threadpoolctl")
    else:
        monkeypatch.setattr(_parallel, "_blas_controller", lambda: None)
    return request.param


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

    threaded = run()
    monkeypatch.setattr(_parallel, "_blas_controller", lambda: None)
    for a, b in zip(threaded, run()):
        np.testing.assert_array_equal(a, b)
