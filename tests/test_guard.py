"""A backward uses the data of the forward that ran (npattn/_guard.py): changing x, a weight,
a mask or the returned output in place between forward and backward changes no gradient, and
the arrays a cache shows (attn_weights, cache fields) are read-only."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from helpers import upstream
from tolerances import F64

import npattn
from npattn import _guard
from npattn import functional as F

B, T, D, H, CTX = 2, 5, 4, 2, 6


def modules():
    """Every chapter class, each attention path of the classes that choose one, and the modern
    classes (they share Linear, the ops and the checks, so the guard covers them too)."""
    yield npattn.SelfAttention_v1(D, D, rng=0)
    yield npattn.SelfAttention_v2(D, D, qkv_bias=True, rng=0)
    yield npattn.MultiHeadAttentionWrapper(D, D, CTX, 0.0, H, qkv_bias=True, rng=0)
    for impl in ("reference", "blocked", "tiled"):
        yield npattn.CausalAttention(D, D, CTX, 0.0, rng=0, attn_impl=impl)
        yield npattn.MultiHeadAttention(D, D, CTX, 0.0, H, qkv_bias=True, rng=0, attn_impl=impl)
    yield from modern_modules()


def modern_modules():
    """Every modern class, each with its optional parts switched on (biases, QK-norm)."""
    yield npattn.GroupedQueryAttention(D, D, 0.0, H, 1, qkv_bias=True, rng=0)
    yield npattn.MultiHeadLatentAttention(D, D, 0.0, H, qkv_bias=True, latent_dim=3, rng=0)
    yield npattn.MultiHeadAttentionWithSWA(
        D, D, 0.0, H, qkv_bias=True, sliding_window_size=2, rng=0
    )
    yield npattn.Qwen3Attention(D, H, 1, 2, qk_norm=True, context_length=CTX, rng=0)


MODULES = list(modules())
IDS = [f"{type(m).__name__}-{getattr(m, 'attn_impl', '')}" for m in MODULES]


def _run(m, x, dy, edit=None):
    """m's output and gradients; edit(m, x, y) runs between forward and backward."""
    y = m(x)
    y_seen = y.copy()
    if edit is not None:
        edit(m, x, y)
    dx = m.backward(dy)
    return y_seen, dx, {k: g.copy() for k, g in m.grads.items()}


def _sgd_step(m, x, y):
    for p in m.parameters().values():  # in place, as an optimizer does
        p -= 0.5 * np.sign(p) + 0.1


def _edit_x(m, x, y):
    x *= -3.0


def _edit_y(m, x, y):
    y *= 2.0


@pytest.mark.parametrize("edit", [_edit_x, _sgd_step, _edit_y], ids=["x", "weights", "y"])
@pytest.mark.parametrize("module", MODULES, ids=IDS)
def test_in_place_edits_between_forward_and_backward_change_no_gradient(module, edit):
    m = copy.deepcopy(module).astype(np.float64)
    x = np.random.default_rng(1).standard_normal((B, T, D))
    dy = upstream((B, T, D * (H if isinstance(m, npattn.MultiHeadAttentionWrapper) else 1)))
    y_ref, dx_ref, grads_ref = _run(copy.deepcopy(m), x.copy(), dy)
    y, dx, grads = _run(m, x, dy, edit)
    np.testing.assert_allclose(y, y_ref, **F64)
    np.testing.assert_allclose(dx, dx_ref, **F64)
    assert grads.keys() == grads_ref.keys()
    for k in grads:
        np.testing.assert_allclose(grads[k], grads_ref[k], **F64, err_msg=k)


@pytest.mark.parametrize("module", MODULES, ids=IDS)
def test_attn_weights_shown_by_a_module_are_read_only(module):
    m = copy.deepcopy(module)
    m(np.ones((B, T, D), dtype=np.float32))
    if m.attn_weights is None:  # the tiled path forms no weights
        return
    if isinstance(m, npattn.MultiHeadAttentionWrapper):  # a stack: a new array, not the cache
        m = m.heads[0]
    with pytest.raises(ValueError, match="read-only"):
        m.attn_weights[..., 0] = 0.0


def _qkv(seed=0, shape=(2, 3, 4)):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(3)]


def _arrays(tree):
    """The arrays in a (nested) list or tuple, in order."""
    if isinstance(tree, (list, tuple)):
        return [a for t in tree for a in _arrays(t)]
    return [tree] if isinstance(tree, np.ndarray) else []


def _grads_after_edit(forward, backward, args):
    """Gradients with and without every array argument and the output edited in place."""
    out_ref, cache_ref = forward(*copy.deepcopy(args))
    dout = upstream(out_ref.shape, seed=3)
    ref = _arrays(backward(dout, cache_ref))
    out, cache = forward(*args)
    for a in _arrays(args) + [out]:
        if a.dtype == np.bool_:
            a[...] = ~a
        else:
            a *= -2.0
    got = _arrays(backward(dout, cache))
    assert len(got) == len(ref) > 0
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, **F64)


def test_ops_keep_private_copies_of_what_the_caller_holds():
    q, k, v = _qkv()
    rng = np.random.default_rng(5)
    keep = rng.random((2, 3, 3)) < 0.7
    mask = rng.random((3, 3)) < 0.7
    w, b = rng.standard_normal((5, 4)), rng.standard_normal(5)
    _grads_after_edit(F.linear_forward, F.linear_backward, [q, w, b])
    _grads_after_edit(F.fused_linear_forward, F.fused_linear_backward, [q, [w, w[:2]], [b, b[:2]]])
    _grads_after_edit(F.sdpa_forward, F.sdpa_backward, [q, k, v, mask])
    _grads_after_edit(
        lambda q, k, v, keep: F.sdpa_forward(q, k, v, None, 0.3, dropout_mask=keep),
        F.sdpa_backward,
        [q, k, v, keep],
    )
    _grads_after_edit(
        lambda q, k, v, keep: F.causal_sdpa_forward(q, k, v, 0.3, dropout_mask=keep),
        F.causal_sdpa_backward,
        [q, k, v, keep],
    )
    _grads_after_edit(
        lambda q, k, v, m: F.flash_attention_forward(q, k, v, m, block_size=2),
        F.flash_attention_backward,
        [q, k, v, mask],
    )
    x = rng.standard_normal((2, 3, 3))
    _grads_after_edit(lambda x, k: F.dropout_forward(x, 0.3, keep=k), F.dropout_backward, [x, keep])
    _grads_after_edit(F.mask_scores_forward, F.mask_scores_backward, [x, mask])
    _grads_after_edit(F.mask_renormalize_forward, F.mask_renormalize_backward, [x, mask])
    inputs = rng.standard_normal((2, 3, 4))
    _grads_after_edit(
        lambda x: F.simple_attention_forward(x)[::2],
        F.simple_attention_backward,
        [inputs],
    )


def test_the_modern_ops_keep_private_copies_of_what_the_caller_holds():
    rng = np.random.default_rng(6)
    x, scale, sinks = rng.standard_normal((2, 3, 4)), rng.standard_normal(4), rng.standard_normal(2)
    cos, sin = F.compute_rope_params(4, 1e4, 5)
    _grads_after_edit(F.rmsnorm_forward, F.rmsnorm_backward, [x, scale])
    _grads_after_edit(lambda x, c, s: F.rope_forward(x, c, s, 1), F.rope_backward, [x, cos, sin])
    _grads_after_edit(lambda x: F.softcap_forward(x, 2.0), F.softcap_backward, [x])
    _grads_after_edit(F.softmax_with_sink_forward, F.softmax_with_sink_backward, [x, sinks.copy()])
    q, k, v = (rng.standard_normal((1, 2, 3, 4)) for _ in range(3))
    _grads_after_edit(
        lambda q, k, v, s: F.sdpa_forward(
            q, k[:, :1], v[:, :1], None, 0.0, True, None, True, softcap=3.0, sinks=s
        ),  # fmt: skip
        F.sdpa_backward,
        [q, k, v, sinks],
    )


def test_the_tiled_op_returns_an_array_its_cache_does_not_keep():
    """y = flash_attention_forward(...); y *= 2 must not change the backward (D uses out)."""
    q, k, v = _qkv(1)
    out, cache = F.flash_attention_forward(q, k, v, is_causal=True)
    assert not np.shares_memory(out, cache.out)
    out, cache = F.causal_sdpa_forward(q, k, v)
    assert not np.shares_memory(out, cache.out)


def test_cache_fields_and_returned_weights_are_read_only():
    q, k, v = _qkv(2)
    _, cache = F.sdpa_forward(q, k, v)
    _, weights, _ = F.simple_attention_forward(q)
    for a in (cache.q, cache.k, cache.v, cache.attn_weights, weights):
        with pytest.raises(ValueError, match="read-only"):
            a[...] = 0.0
    assert q.flags.writeable  # the caller's arrays keep their flags: inputs never change


def test_the_switch_restores_the_old_behaviour(monkeypatch):
    """enabled = False (for the cost benchmark only) keeps references: then an edit shows."""
    monkeypatch.setattr(_guard, "enabled", False)
    q, k, v = _qkv(3)
    out, cache = F.sdpa_forward(q, k, v)
    assert cache.q is q and cache.attn_weights.flags.writeable
