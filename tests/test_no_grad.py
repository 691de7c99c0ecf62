"""npattn.no_grad(): forwards that keep nothing for a backward (npattn/_grad.py), and cached
decoding (use_cache=True), which runs under it."""

from __future__ import annotations

import copy
import pickle
import threading

import numpy as np
import pytest
from helpers import upstream
from test_guard import MODULES, modern_modules

import npattn
from npattn import functional as F
from npattn.ops.linear import linear_backward, linear_forward
from npattn.ops.rmsnorm import rmsnorm_backward, rmsnorm_forward
from npattn.ops.rope import compute_rope_params, rope_backward, rope_forward
from npattn.ops.sdpa import sdpa_backward, sdpa_forward

B, T, D = 2, 5, 4
IDS = [f"{type(m).__name__}-{getattr(m, 'attn_impl', '')}" for m in MODULES]
REFERENCE = [m for m in MODULES if getattr(m, "attn_impl", "reference") == "reference"]
CACHED = [m for m in MODULES if hasattr(m, "reset_cache")]
CACHED_IDS = [type(m).__name__ for m in CACHED]


def _x(seed=1, shape=(B, T, D)):
    return np.random.default_rng(seed).standard_normal(shape)


def _reachable_arrays(obj, seen=None):
    """Every numpy array reachable from obj: attributes of modules and of npattn objects (the
    KV buffer), tuples, lists and dicts, caches included."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _reachable_arrays(item, seen)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _reachable_arrays(item, seen)
    elif type(obj).__module__.startswith("npattn") and hasattr(obj, "__dict__"):
        yield from _reachable_arrays(vars(obj), seen)


def assert_nothing_kept(m, marked=True):
    """No cache in m or any child (each marked as having run under no_grad), and no array
    anywhere in m with a parameter's shape that is not that parameter: no weight copy."""
    for name, child in m.named_modules():
        assert child._cache is None, f"{name or 'the module'} kept a cache"
        if marked:
            assert child.__dict__["_cache_entry"][1] is not None, name  # the no_grad marker
    params = {id(a) for a in m.state_dict().values()}
    shapes = {a.shape for a in m.parameters().values() if a.ndim == 2}
    for a in _reachable_arrays(m):
        assert id(a) in params or a.shape not in shapes, f"an array {a.shape} besides a weight"


def test_is_grad_enabled_nests_and_restores():
    assert npattn.is_grad_enabled()
    with npattn.no_grad():
        assert not npattn.is_grad_enabled()
        with npattn.no_grad():
            assert not npattn.is_grad_enabled()
        assert not npattn.is_grad_enabled()
    assert npattn.is_grad_enabled()
    with pytest.raises(KeyError), npattn.no_grad():
        raise KeyError("raised inside")
    assert npattn.is_grad_enabled()  # restored after an exception


def test_no_grad_is_a_decorator():
    @npattn.no_grad()
    def inside():
        return npattn.is_grad_enabled()

    assert inside() is False and inside() is False  # the same instance, twice
    assert npattn.is_grad_enabled()


def test_no_grad_is_per_thread():
    seen = {}
    started, release = threading.Event(), threading.Event()
    m = npattn.MultiHeadAttention(D, D, 6, 0.0, 2, rng=0)
    other = copy.deepcopy(m)

    def worker():
        started.wait()
        seen["enabled"] = npattn.is_grad_enabled()
        other(_x())  # another thread's forward keeps its cache
        seen["cache"] = other._cache is not None
        release.set()

    th = threading.Thread(target=worker)
    th.start()
    with npattn.no_grad():
        started.set()
        release.wait(10)
        m(_x())
    th.join()
    assert seen == {"enabled": True, "cache": True}
    assert_nothing_kept(m)
    assert other.backward(upstream((B, T, D))).shape == (B, T, D)


@pytest.mark.parametrize("module", MODULES, ids=IDS)
def test_outputs_equal_and_nothing_is_kept_under_no_grad(module):
    m = copy.deepcopy(module).astype(np.float64)
    x = _x()
    y = m(x)
    with npattn.no_grad():
        y_ng = m(x)
    np.testing.assert_array_equal(y_ng, y)  # the same numbers, exactly
    assert_nothing_kept(m, marked=False)  # (the fused paths run no forward of the layers)
    with pytest.raises(RuntimeError, match=r"npattn\.no_grad\(\)"):
        m.backward(upstream(y.shape))
    m(x)  # a forward outside it keeps its cache again
    assert m.backward(upstream(y.shape)).shape == x.shape


@pytest.mark.parametrize("module", REFERENCE, ids=[type(m).__name__ for m in REFERENCE])
def test_a_child_backward_after_no_grad_names_no_grad(module):
    """(The fused paths run no forward of the layers: their backward says so instead.)"""
    m = copy.deepcopy(module)
    with npattn.no_grad():
        m(_x().astype(np.float32))
    for _, child in m.named_modules():
        if isinstance(child, npattn.Linear):
            with pytest.raises(RuntimeError, match=r"npattn\.no_grad\(\)"):
                child.backward(np.ones((B, T, child.out_features)))


@pytest.mark.parametrize("module", CACHED, ids=CACHED_IDS)
def test_cached_decoding_keeps_nothing_in_any_child(module):
    m = copy.deepcopy(module)
    if isinstance(m, npattn.MultiHeadLatentAttention):
        assert not m.absorbed  # the latent path: W_UK reads the whole latent
    x = _x(shape=(B, 6, D)).astype(np.float32)
    m(x[:, :3], use_cache=True)  # keyword
    m.forward(x[:, 3:4], True)  # positional, and forward called directly
    for t in range(4, 6):
        m(x[:, t : t + 1], use_cache=True)
    assert npattn.is_grad_enabled()
    assert_nothing_kept(m)
    with pytest.raises(RuntimeError, match="use_cache"):
        m.backward(np.ones((B, 1, m.out_proj.out_features)))


@pytest.mark.parametrize("module", CACHED, ids=CACHED_IDS)
def test_cached_decoding_gives_the_full_forwards_numbers(module):
    m = copy.deepcopy(module).astype(np.float64)
    x = _x(shape=(B, 6, D))
    full = m(x)
    m.reset_cache()
    steps = [m(x[:, :3], use_cache=True)] + [
        m(x[:, t : t + 1], use_cache=True) for t in range(3, 6)
    ]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-12, atol=1e-12)


def test_a_full_forward_after_cached_calls_keeps_its_cache_again():
    (m,) = (copy.deepcopy(mm) for mm in modern_modules() if isinstance(mm, npattn.Qwen3Attention))
    x = _x().astype(np.float32)
    m(x[:, :2], use_cache=True)
    y = m(x)
    assert m.backward(upstream(y.shape)).shape == x.shape


def _op_cases():
    """(name, forward() -> (out, cache), backward(dout, cache)) for every op with a cache."""
    rng = np.random.default_rng(0)
    x, w, scale = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), np.ones(4)
    q, k, v = (rng.standard_normal((2, 2, 3, 4)) for _ in range(3))
    scores, mask = rng.standard_normal((2, 3, 3)), np.tril(np.ones((3, 3), dtype=bool))
    keep = rng.random((2, 3, 4)) > 0.5
    cos, sin = compute_rope_params(4, 10_000.0, 8)

    def simple():
        out, _, cache = F.simple_attention_forward(x)
        return out, cache

    return {
        "linear": (lambda: linear_forward(x, w), linear_backward),
        "fused_linear": (lambda: F.fused_linear_forward(x, [w, w]), F.fused_linear_backward),
        "rmsnorm": (lambda: rmsnorm_forward(x, scale), rmsnorm_backward),
        "rope": (lambda: rope_forward(q, cos, sin), rope_backward),
        "mask_scores": (lambda: F.mask_scores_forward(scores, mask), F.mask_scores_backward),
        "mask_renormalize": (
            lambda: F.mask_renormalize_forward(np.abs(scores), mask),
            F.mask_renormalize_backward,
        ),
        "softcap": (lambda: F.softcap_forward(scores, 2.0), F.softcap_backward),
        "simple": (simple, F.simple_attention_backward),
        "dropout": (lambda: F.dropout_forward(x, 0.5, keep=keep), F.dropout_backward),
        "sdpa": (lambda: sdpa_forward(q, k, v, is_causal=True), sdpa_backward),
        "causal_sdpa": (lambda: F.causal_sdpa_forward(q, k, v), F.causal_sdpa_backward),
        "flash": (
            lambda: F.flash_attention_forward(q, k, v, is_causal=True, block_size=2),
            F.flash_attention_backward,
        ),
    }


OPS = _op_cases()


@pytest.mark.parametrize("name", OPS)
def test_ops_keep_no_cache_and_their_backward_names_no_grad(name):
    """Under no_grad an op returns the same output, and a cache that is None or keeps only
    what the op shows (sdpa's and the blocked op's attn_weights): its backward raises."""
    forward, backward = OPS[name]
    out, ref_cache = forward()
    dout = upstream(out.shape)
    backward(dout, ref_cache)  # outside no_grad: the cache serves a backward
    with npattn.no_grad():
        out_ng, cache = forward()
    np.testing.assert_array_equal(out_ng, out)
    for c in {id(cache): cache, id(None): None}.values():
        with pytest.raises(RuntimeError, match=r"npattn\.no_grad\(\)"):
            backward(dout, c)


def test_the_attention_ops_still_show_their_weights_under_no_grad():
    q, k, v = (np.random.default_rng(i).standard_normal((2, 2, 3, 4)) for i in range(3))
    for forward in (
        lambda: sdpa_forward(q, k, v, is_causal=True),
        lambda: F.causal_sdpa_forward(q, k, v),
    ):
        _, ref = forward()
        with npattn.no_grad():
            _, cache = forward()
        assert cache.q is None and cache.k is None and cache.v is None
        np.testing.assert_array_equal(cache.attn_weights, ref.attn_weights)


def test_no_copy_is_made_under_no_grad():
    x, w = np.ones((1, 2, 4)), np.ones((3, 4))
    _, (x_kept, w_kept, _) = linear_forward(x, w)
    assert not np.shares_memory(w_kept, w)  # outside: a private copy
    with npattn.no_grad():
        m = npattn.Linear(4, 3, rng=0)
        m(x)
        assert m._cache is None and m.weight.flags.writeable  # neither copied nor frozen


def test_a_copy_or_pickle_of_a_no_grad_module_still_names_no_grad():
    m = npattn.GroupedQueryAttention(D, D, 0.0, 2, 1, rng=0)
    with npattn.no_grad():
        m(_x())
    for twin in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert twin._cache is None
        with pytest.raises(RuntimeError, match=r"npattn\.no_grad\(\)"):
            twin.backward(upstream((B, T, D)))
