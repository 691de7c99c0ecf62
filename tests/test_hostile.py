"""Hostile use of the modules and ops: each case is a named error or the right result, and a
call that fails leaves the module as if it had never been made (docs/safety.md)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from helpers import upstream

import npattn
from npattn.ops.rmsnorm import rmsnorm_backward, rmsnorm_forward
from npattn.ops.rope import compute_rope_params, rope_forward
from npattn.ops.sinks import softmax_with_sink_backward, softmax_with_sink_forward
from npattn.ops.softcap import softcap_forward

torch = pytest.importorskip("torch")
import torch_port as tp  # noqa: E402

# -- numerics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [int, np.int32, "bool", object, "U3", "float99", ","])
def test_rmsnorm_refuses_non_float_dtypes_by_name(dtype):
    with pytest.raises(TypeError, match="dtype"):
        npattn.RMSNorm(4, dtype=dtype)


def test_float16_rmsnorm_computes_the_mean_of_squares_in_float32_as_torch():
    x = np.array([[300.0, -200.0, 250.0, 100.0]], dtype=np.float16)  # x**2 > 65504
    norm = npattn.RMSNorm(4).astype(np.float16)
    out = norm(x)
    ref = torch.nn.functional.rms_norm(torch.tensor(x), (4,), torch.ones(4, dtype=torch.float16))
    assert np.all(np.isfinite(out)) and np.abs(out).max() > 0.5
    np.testing.assert_allclose(out, ref.numpy(), atol=2e-3)
    dy = upstream(out.shape, 0).astype(np.float16)
    xt = torch.tensor(x.astype(np.float32), requires_grad=True)
    torch.nn.functional.rms_norm(xt, (4,), eps=1e-6).backward(torch.tensor(dy, dtype=torch.float32))
    dx, _ = rmsnorm_backward(dy, rmsnorm_forward(x, np.ones(4, np.float16))[1])
    assert dx.dtype == np.float16
    np.testing.assert_allclose(dx.astype(np.float64), xt.grad.numpy(), rtol=1e-2, atol=1e-5)


def test_a_float16_softcap_above_float16_range_gives_the_capped_scores():
    scores = np.array([[1.0, -2.0], [3.0, 0.5]], dtype=np.float16)
    out, _ = softcap_forward(scores, 1e6)
    assert out.dtype == np.float16
    np.testing.assert_allclose(out, scores, rtol=1e-3)  # 1e6 tanh(s / 1e6) = s


def test_infinite_sinks_give_their_limits_forward_and_backward():
    scores = upstream((2, 3, 4), 1)  # (H, L, S)
    dw = upstream((2, 3, 4), 2)
    w, cache = softmax_with_sink_forward(scores, np.array([np.inf, 30.0]))
    np.testing.assert_array_equal(w[0], 0.0)  # +inf: the sink takes the whole row
    assert np.all(np.isfinite(w)) and cache[1][0].min() == 1.0
    ds, dsinks = softmax_with_sink_backward(dw, cache)
    assert np.all(np.isfinite(ds)) and np.all(np.isfinite(dsinks)) and dsinks[0] == 0.0
    w, cache = softmax_with_sink_forward(scores, np.array([-np.inf, -np.inf]))
    e = np.exp(scores - scores.max(-1, keepdims=True))
    np.testing.assert_allclose(w, e / e.sum(-1, keepdims=True))  # -inf: no sink at all
    masked = np.full((1, 1, 3), -np.inf)
    w, cache = softmax_with_sink_forward(masked, np.array([-np.inf]))
    np.testing.assert_array_equal(w, 0.0)
    assert np.all(np.isfinite(softmax_with_sink_backward(np.ones_like(w), cache)[0]))


@pytest.mark.parametrize("impl", ["reference", "tiled"])
def test_an_infinite_sink_in_a_module_gives_no_nan(impl):
    config = npattn.AttentionConfig(hidden_size=4, num_heads=2, num_kv_heads=1, sinks=True)
    m = npattn.Attention(config, rng=0, attn_impl=impl).astype(np.float64)
    ref = npattn.Attention(config, rng=0).astype(np.float64)
    sd = m.state_dict()
    sd["sinks"] = np.array([np.inf, -np.inf])
    m.load_state_dict(sd)
    ref.load_state_dict(sd)
    x, dy = upstream((1, 3, 4), 3), upstream((1, 3, 4), 4)
    out = m(x)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, ref(x), rtol=1e-12, atol=1e-12)
    dx = m.backward(dy)
    assert np.all(np.isfinite(dx)) and np.all(np.isfinite(m.grads["sinks"]))
    np.testing.assert_allclose(dx, ref.backward(dy), rtol=1e-12, atol=1e-12)
    m.reset_cache()
    np.testing.assert_allclose(m(x, use_cache=True), out, rtol=1e-12, atol=1e-12)


def test_rope_offset_of_a_small_int_type_does_not_wrap_around():
    cos, sin = compute_rope_params(4, context_length=300)
    x = upstream((1, 1, 3, 4), 5)
    out, _ = rope_forward(x, cos, sin, np.int8(127))
    np.testing.assert_array_equal(out, rope_forward(x, cos, sin, 127)[0])


def test_rope_flags_and_configs_are_checked():
    cos, sin = compute_rope_params(4, context_length=8)
    with pytest.raises(TypeError, match="interleaved"):
        rope_forward(np.ones((1, 2, 4)), cos, sin, interleaved="yes")
    with pytest.raises((TypeError, ValueError), match="factor"):
        npattn.RoPE(scaling=npattn.Llama3(float("nan"), 1.0, 4.0, 8))
    with pytest.raises(ValueError, match="factor"):
        npattn.RoPE(theta=1e300, scaling=npattn.LinearScaling(1e-300))
    bad = {"factor": 8.0, "low_freq_factor": float("nan"), "high_freq_factor": 4.0,
           "original_context_length": 8}  # fmt: skip
    with pytest.raises(ValueError, match="low_freq_factor"):
        npattn.Qwen3Attention(8, 2, 1, head_dim=4, context_length=8, rope_freq_config=bad)


# -- flags and tensors --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["no", 0, 1, None, 1.0])
def test_train_takes_a_bool(mode):
    m = npattn.GroupedQueryAttention(4, 4, 0.0, 2, 1, rng=0).eval()
    with pytest.raises(TypeError, match="mode"):
        m.train(mode)
    assert m.training is False and m.W_query.training is False


def test_meta_tensors_are_refused_by_name():
    m = npattn.GroupedQueryAttention(4, 4, 0.0, 2, 1, rng=0)
    with pytest.raises(TypeError, match="x must be an array with values.*meta"):
        m(torch.empty(1, 2, 4, device="meta"))
    sd = dict(m.state_dict())
    sd["W_query.weight"] = torch.empty(4, 4, device="meta")
    with pytest.raises(TypeError, match="W_query.weight"):
        m.load_state_dict(sd)


def test_absorbed_mla_with_dropout_1_and_biases_drops_everything():
    m = npattn.MultiHeadLatentAttention(4, 4, 1.0, 2, qkv_bias=True, latent_dim=3, rng=0)
    plain = npattn.MultiHeadLatentAttention(4, 4, 1.0, 2, qkv_bias=True, latent_dim=3, rng=0)
    m.absorbed = True
    x = upstream((1, 3, 4), 6).astype(np.float32)
    m.rng, plain.rng = np.random.default_rng(1), np.random.default_rng(1)
    np.testing.assert_allclose(m(x, use_cache=True), plain(x, use_cache=True), atol=1e-6)


# -- no corruption: every check before any state changes ----------------------------------------


def _latent(dropout=0.0):
    cfg = npattn.LatentConfig(
        hidden_size=4, num_heads=2, q_lora_rank=None, kv_lora_rank=3, qk_nope_head_dim=2,
        qk_rope_head_dim=2, v_head_dim=2, rope=npattn.RoPE(), dropout=dropout,
    )  # fmt: skip
    return npattn.LatentAttention(cfg, rng=0)


MODULES = {  # (B, T, 4) -> (B, T, 4), dropout where the class has it
    "Attention": lambda: npattn.Attention(
        npattn.AttentionConfig(
            hidden_size=4,
            num_heads=2,
            num_kv_heads=1,
            dropout=0.3,
            sinks=True,
            softcap=5.0,
            rope=npattn.RoPE(),
        ),
        rng=0,
    ),
    "GroupedQueryAttention": lambda: npattn.GroupedQueryAttention(4, 4, 0.3, 2, 1, rng=0),
    "MultiHeadAttentionWithSWA": lambda: npattn.MultiHeadAttentionWithSWA(
        4, 4, 0.3, 2, sliding_window_size=2, rng=0
    ),
    "Qwen3Attention": lambda: npattn.Qwen3Attention(4, 2, 1, 2, context_length=8, rng=0),
    "MultiHeadLatentAttention": lambda: npattn.MultiHeadLatentAttention(
        4, 4, 0.3, 2, latent_dim=3, rng=0
    ),
    "MultiHeadAttention": lambda: npattn.MultiHeadAttention(4, 4, 8, 0.3, 2, rng=0),
    "LatentAttention": lambda: _latent(0.3),
}
PADDED = [n for n in MODULES if n != "MultiHeadAttention"]  # the classes with key padding


def make(name, seed=0):
    m = MODULES[name]().astype(np.float64)
    m.rng = np.random.default_rng(seed)
    return m


def x_of(seed, T=3, B=2):
    return upstream((B, T, 4), seed)


@pytest.mark.parametrize("name", PADDED)
@pytest.mark.parametrize("bad", ["shape", "dtype"])
def test_a_bad_key_padding_mask_leaves_the_last_forward_for_its_backward(name, bad):
    m, ref = make(name), make(name)
    x, dy = x_of(1), upstream((2, 3, 4), 2)
    m(x)
    ref(x)
    kpm = np.ones((2, 5), bool) if bad == "shape" else np.ones((2, 3))
    with pytest.raises((ValueError, TypeError), match="key_padding_mask"):
        m(x_of(3), key_padding_mask=kpm)
    np.testing.assert_array_equal(m.backward(dy), ref.backward(dy))
    for key, g in ref.grads.items():
        np.testing.assert_array_equal(m.grads[key], g, err_msg=key)


@pytest.mark.parametrize("name", ["Attention", "MultiHeadLatentAttention", "LatentAttention"])
def test_a_backward_that_raises_overwrites_no_gradient(name):
    """Another thread's forward on one child (W_query's, or the last projection) replaced its
    cache: the backward raises before any child's backward has run."""
    m = make(name)
    m(x_of(1))
    m.backward(upstream((2, 3, 4), 2))
    before = {k: g.copy() for k, g in m.grads.items()}
    m(x_of(3))  # this thread's forward; its backward is to be refused
    child = next(c for n, c in m.named_modules() if n.startswith(("W_query", "W_q")))
    t = threading.Thread(target=lambda: child(upstream((2, 3, 4), 4)))
    t.start()
    t.join()
    with pytest.raises(RuntimeError, match="another thread's forward"):
        m.backward(upstream((2, 3, 4), 5))
    assert before.keys() == m.grads.keys()
    for key, g in before.items():
        np.testing.assert_array_equal(m.grads[key], g, err_msg=key)


def _failing_out_proj(m):
    def fail(*args, **kwargs):
        raise MemoryError("out_proj failed")

    m.out_proj.forward = fail


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("use_cache", [False, True])
def test_a_call_that_fails_late_leaves_the_shown_weights_and_the_cache(name, use_cache):
    m = make(name).train()
    m(x_of(1), use_cache=use_cache)
    shown = (m.attn_weights, m.dropout_mask)
    assert shown[0] is not None and (shown[1] is not None or name == "Qwen3Attention")
    state = (m.ptr_current_pos, m.cache_nbytes)
    _failing_out_proj(m)
    with pytest.raises(MemoryError):
        m(x_of(2, T=1), use_cache=use_cache)
    assert m.attn_weights is shown[0] and m.dropout_mask is shown[1]
    assert (m.ptr_current_pos, m.cache_nbytes) == state


# -- decoding: the cache is never emptied silently, one thread decodes --------------------------


def test_one_token_decoding_respects_a_changed_mask_buffer():
    m = make("MultiHeadAttention").eval()
    mask = m.mask.copy()
    mask[:, 0] = 1.0  # key 0 hidden from every query but the first
    mask[0, 0] = 0.0
    m.mask = mask
    x = x_of(1, T=4)
    full = m(x)
    m.reset_cache()
    steps = np.concatenate([m(x[:, i : i + 1], use_cache=True) for i in range(4)], axis=1)
    np.testing.assert_allclose(steps, full, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("change", ["astype", "load_state_dict", "astype float32"])
def test_new_parameters_mid_decoding_keep_the_cache_and_stop_decoding(name, change):
    m = make(name).eval()
    m(x_of(1, T=2), use_cache=True)
    held = (m.ptr_current_pos, m.cache_nbytes)
    if change == "astype":
        m.astype(np.float64)
    elif change == "astype float32":
        m.astype(np.float32)
    else:
        m.load_state_dict(m.state_dict())
    assert (m.ptr_current_pos, m.cache_nbytes) == held  # nothing emptied behind the caller
    with pytest.raises(RuntimeError, match="reset_cache"):
        m(x_of(2, T=1), use_cache=True)
    assert (m.ptr_current_pos, m.cache_nbytes) == held
    m.reset_cache()
    assert m(x_of(2, T=1), use_cache=True).shape == (2, 1, 4) and m.ptr_current_pos == 1


@pytest.mark.parametrize("name", ["GroupedQueryAttention", "MultiHeadAttentionWithSWA"])
def test_a_setter_mid_decoding_stops_decoding_until_a_reset(name):
    m = make(name).eval()
    m(x_of(1, T=2), use_cache=True)
    m.dropout = 0.0
    with pytest.raises(RuntimeError, match="parameters changed"):
        m(x_of(2, T=1), use_cache=True)


@pytest.mark.parametrize("name", MODULES)
def test_decoding_from_a_second_thread_raises_until_a_reset(name):
    m, ref = make(name).eval(), make(name).eval()
    x = x_of(1, T=3)
    m(x[:, :2], use_cache=True)
    ref(x[:, :2], use_cache=True)
    errors = []

    def other():
        try:
            m(x_of(5, T=1), use_cache=True)
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert len(errors) == 1 and "another thread" in str(errors[0])
    np.testing.assert_array_equal(m(x[:, 2:], use_cache=True), ref(x[:, 2:], use_cache=True))

    def take_over():
        m.reset_cache()
        errors.append(m(x[:, :1], use_cache=True))

    t = threading.Thread(target=take_over)
    t.start()
    t.join()
    assert errors[-1].shape == (2, 1, 4)


@pytest.mark.parametrize("name", ["Attention", "MultiHeadLatentAttention", "MultiHeadAttention"])
def test_reset_cache_from_another_thread_waits_for_a_running_call(name):
    m = make(name).eval()
    m(x_of(1, T=2), use_cache=True)
    project = m.out_proj.forward
    resets = []

    def reset():
        m.reset_cache()
        resets.append(m.ptr_current_pos)

    def out_proj_with_a_reset(context):
        t = threading.Thread(target=reset)
        t.start()
        t.join(timeout=0.5)  # the reset waits for this call to finish
        resets.append(t)
        return project(context)

    m.out_proj.forward = out_proj_with_a_reset
    out = m(x_of(2, T=1), use_cache=True)
    resets[0].join()
    del m.out_proj.forward
    assert out.shape == (2, 1, 4) and resets[1:] == [0]
    assert m.ptr_current_pos == 0 and m.cache_nbytes == 0


# -- the read-only guard ------------------------------------------------------------------------


def test_a_read_only_input_that_owns_its_memory_is_still_copied_into_the_cache():
    m, ref = make("GroupedQueryAttention"), make("GroupedQueryAttention")
    x = x_of(1)
    x.flags.writeable = False  # owns its memory: the caller can flip it back
    dy = upstream((2, 3, 4), 2)
    m(x)
    ref(x.copy())
    x.flags.writeable = True
    x[:] = 7.0
    np.testing.assert_array_equal(m.backward(dy), ref.backward(dy))
    from npattn import _guard

    a = np.ones(3)
    a.flags.writeable = False
    assert _guard.private(a, a) is not a
    frozen = np.frombuffer(b"\0" * 24)  # bytes: nobody can write, no copy needed
    assert _guard.private(frozen, frozen) is frozen


# -- allocations checked before they are made ---------------------------------------------------

HUGE_T = 400_000  # (1, 2, T, T) float64 scores: 2.5 TB


@pytest.mark.parametrize("name", PADDED)  # MultiHeadAttention: T <= its context_length
def test_scores_too_large_for_memory_raise_a_named_error_and_change_nothing(name):
    m, ref = make(name), make(name)
    if name == "Qwen3Attention":
        m = npattn.Qwen3Attention(4, 2, 1, 2, context_length=HUGE_T, rng=0).astype(np.float64)
        ref = npattn.Qwen3Attention(4, 2, 1, 2, context_length=HUGE_T, rng=0).astype(np.float64)
    x, dy = x_of(1), upstream((2, 3, 4), 2)
    m(x)
    ref(x)
    for use_cache in (False, True):
        with pytest.raises(ValueError, match="x asks for attention scores"):
            m(np.zeros((1, HUGE_T, 4)), use_cache=use_cache)
    np.testing.assert_array_equal(m.backward(dy), ref.backward(dy))
    for key, g in ref.grads.items():
        np.testing.assert_array_equal(m.grads[key], g, err_msg=key)


def test_sdpa_checks_the_scores_allocation():
    q = np.zeros((1, 1, HUGE_T, 2))
    with pytest.raises(ValueError, match="query and key asks for attention scores"):
        npattn.functional.sdpa_forward(q, q, q)


# -- torch_port ---------------------------------------------------------------------------------


def _port(name):
    if name == "GroupedQueryAttention":
        return tp.GroupedQueryAttention(4, 4, 0.0, 2, 1)
    if name == "MultiHeadLatentAttention":
        return tp.MultiHeadLatentAttention(4, 4, 0.0, 2, latent_dim=3)
    if name == "MultiHeadAttentionWithSWA":
        return tp.MultiHeadAttentionWithSWA(4, 4, 0.0, 2, sliding_window_size=2)
    return tp.MultiHeadAttention(4, 4, 6, 0.0, 2)


PORTS = ["GroupedQueryAttention", "MultiHeadLatentAttention", "MultiHeadAttentionWithSWA",
         "MultiHeadAttention"]  # fmt: skip


@pytest.mark.parametrize("name", PORTS)
@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 0, 4)])
def test_torch_port_refuses_empty_inputs_as_npattn_does(name, shape):
    if name == "MultiHeadAttention" and shape[0] == 0:  # the chapter's class: an empty output
        assert _port(name)(torch.zeros(shape)).shape == make(name)(np.zeros(shape)).shape
        return
    if name == "MultiHeadAttention":
        with pytest.raises(ValueError, match="at least one .*token"):
            _port(name)(torch.zeros(shape))
        return
    with pytest.raises(ValueError, match="at least one sequence and one token"):
        _port(name)(torch.zeros(shape))
    with pytest.raises(ValueError, match="at least one sequence and one token"):
        make(name)(np.zeros(shape))


@pytest.mark.parametrize("name", PORTS)
def test_torch_port_takes_tensors_and_bools(name):
    m = _port(name)
    with pytest.raises(TypeError, match="x must be a torch tensor"):
        m(np.zeros((1, 2, 4), np.float32))
    for flag in ("no", 1, None):
        with pytest.raises(TypeError, match="use_cache"):
            m(torch.zeros(1, 2, 4), use_cache=flag)
    assert m.ptr_current_pos == 0


# -- NaN semantics: a masked position contributes nothing ------------------------------------------


def _sdpa(q, k, v, mask, softcap=None):
    return npattn.functional.sdpa_forward(q, k, v, mask, softcap=softcap)


def _tiled(q, k, v, mask, softcap=None):
    return npattn.functional.flash_attention_forward(q, k, v, mask, block_size=2, softcap=softcap)


OPS = {"sdpa": (_sdpa, npattn.functional.sdpa_backward), "tiled": (_tiled, None)}


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("mask_kind", ["bool", "float"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("softcap", [None, 3.0])
def test_a_masked_non_finite_key_or_value_contributes_nothing_forward_and_backward(
    op, mask_kind, bad, softcap
):
    """Key 2 of 5 holds NaN / inf in its key and value and is masked for every query: the
    result is that of the 4 other keys, and key 2's gradients are 0."""
    q, k, v = upstream((1, 2, 3, 4), 1), upstream((1, 2, 4, 4), 2), upstream((1, 2, 4, 4), 3)
    k5, v5 = (np.insert(a, 2, bad, axis=2) for a in (k, v))  # (1, 2, 5, 4): key 2 is bad
    keep = np.ones((3, 5), bool)
    keep[:, 2] = False
    mask = keep if mask_kind == "bool" else np.where(keep, 0.0, -np.inf)
    forward = OPS[op][0]
    out, cache = forward(q, k5, v5, mask, softcap)
    ref, ref_cache = forward(q, k, v, None, softcap)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    dout = upstream(out.shape, 4)
    backward = OPS[op][1] or npattn.functional.flash_attention_backward
    dq, dk, dv = backward(dout, cache)
    rq, rk, rv = backward(dout, ref_cache)
    np.testing.assert_allclose(dq, rq, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.delete(dk, 2, axis=2), rk, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.delete(dv, 2, axis=2), rv, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(dk[:, :, 2], 0.0)
    np.testing.assert_array_equal(dv[:, :, 2], 0.0)


def test_an_attended_nan_still_propagates():
    q, k, v = (upstream((1, 1, 3, 4), s) for s in (1, 2, 3))
    v[0, 0, 1, 0] = np.nan
    out, _ = npattn.functional.sdpa_forward(q, k, v, is_causal=True)
    assert np.all(np.isfinite(out[0, 0, 0])) and np.isnan(out[0, 0, 1:, 0]).all()
    assert np.all(np.isfinite(out[0, 0, 1:, 1:]))


CAUSAL = {
    **{f"{n} reference": (lambda n=n: MODULES[n]()) for n in MODULES},
    **{
        f"{n} tiled": (lambda n=n: _with_impl(MODULES[n](), "tiled"))
        for n in [
            "Attention",
            "GroupedQueryAttention",
            "MultiHeadAttentionWithSWA",
            "Qwen3Attention",
            "MultiHeadAttention",
        ]  # fmt: skip
    },
    "MultiHeadAttention blocked": lambda: _with_impl(MODULES["MultiHeadAttention"](), "blocked"),
    "CausalAttention": lambda: npattn.CausalAttention(4, 4, 8, 0.3, rng=0),
    "MultiHeadAttentionWrapper": lambda: npattn.MultiHeadAttentionWrapper(4, 2, 8, 0.3, 2, rng=0),
}


def _with_impl(m, impl):
    m.attn_impl = impl
    return m


@pytest.mark.parametrize("name", CAUSAL)
@pytest.mark.parametrize("use_cache", [False, True])
def test_a_nan_in_a_later_token_leaves_earlier_tokens_finite(name, use_cache):
    """Causal attention: the last token is masked for every earlier one, on every path (the
    full forward, a cached chunk, the tiled and blocked kernels, the chapter's classes)."""
    m = CAUSAL[name]().astype(np.float64).eval()
    x = x_of(1, T=5)
    x[:, 4, 1] = np.nan
    if use_cache and not hasattr(m, "reset_cache"):
        pytest.skip("no KV cache")
    out = m(x, use_cache=True) if use_cache else m(x)
    assert np.all(np.isfinite(out[:, :4])), name
    assert np.isnan(out[:, 4]).any()  # the NaN token itself: propagated


# -- setters name the attribute that was set -------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, 1.5, "x", True])
def test_setting_sliding_window_size_names_it(value):
    m = make("MultiHeadAttentionWithSWA")
    with pytest.raises((TypeError, ValueError), match="^sliding_window_size ") as e:
        m.sliding_window_size = value
    assert "window " not in str(e.value).replace("sliding_window_size", "")
    assert m.sliding_window_size == 2


@pytest.mark.parametrize("name", ["GroupedQueryAttention", "MultiHeadAttentionWithSWA"])
@pytest.mark.parametrize("value", [2, -0.1, float("nan"), "x", None])
def test_setting_dropout_names_it(name, value):
    m = make(name)
    with pytest.raises((TypeError, ValueError), match="^dropout ") as e:
        m.dropout = value
    assert not str(e.value).startswith("p ") and m.dropout == 0.3


def test_a_copy_of_a_decoding_module_decodes_on_in_another_thread():
    """copy.deepcopy is the way to give a thread its own module: the copy has no owner."""
    import copy

    m = make("GroupedQueryAttention").eval()
    x = x_of(1, T=3)
    m(x[:, :2], use_cache=True)
    twin = copy.deepcopy(m)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("y", twin(x[:, 2:], use_cache=True)))
    t.start()
    t.join()
    np.testing.assert_array_equal(out["y"], m(x[:, 2:], use_cache=True))


@pytest.mark.parametrize("dtype", ["float99", int, ","])
def test_the_chapter_inputs_take_a_float_dtype(dtype):
    from npattn.chapter.data import chapter_batch, chapter_inputs

    for make_inputs in (chapter_inputs, chapter_batch):
        with pytest.raises(TypeError, match="dtype"):
            make_inputs(dtype)
