"""Hostile use of the modules and ops: each case is a named error or the right result, and a
call that fails leaves the module as if it had never been made (docs/safety.md)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import upstream

import npattn
from npattn.ops.rmsnorm import rmsnorm_backward, rmsnorm_forward
from npattn.ops.rope import compute_rope_params, rope_forward
from npattn.ops.sinks import softmax_with_sink_backward, softmax_with_sink_forward
from npattn.ops.softcap import softcap_forward

torch = pytest.importorskip("torch")

# -- numerics ----------------------------------------------------------------------------------


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


def test_an_infinite_sink_in_a_module_gives_no_nan():
    config = npattn.AttentionConfig(hidden_size=4, num_heads=2, num_kv_heads=1, sinks=True)
    m = npattn.Attention(config, rng=0).astype(np.float64)
    sd = m.state_dict()
    sd["sinks"] = np.array([np.inf, -np.inf])
    m.load_state_dict(sd)
    x = upstream((1, 3, 4), 3)
    assert np.all(np.isfinite(m(x)))
    assert np.all(np.isfinite(m.backward(upstream((1, 3, 4), 4))))
    m.reset_cache()
    assert np.all(np.isfinite(m(x, use_cache=True)))


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


# -- flags and tensors -------------------------------------------------------------------------


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
