"""No silent failure: one dtype rule, threads that cannot mix caches, bad input refused by name,
and every error the project's own (docs/safety.md)."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
from helpers import upstream
from tolerances import F64

import npattn
from npattn import functional as F
from npattn import io as npio

torch = pytest.importorskip("torch")
import torch_port as tp  # noqa: E402

ATTENTION_OPS = {
    "sdpa": lambda q, k, v: F.sdpa_forward(q, k, v, is_causal=True),
    "causal": F.causal_sdpa_forward,
    "tiled": lambda q, k, v: F.flash_attention_forward(q, k, v, is_causal=True, block_size=2),
}


def mha(**kw):
    return npattn.MultiHeadAttention(4, 4, 6, 0.0, 2, rng=0, **kw)


MODULES = {  # (B, T, 4) -> (B, T, 4): the chapter's MultiHeadAttention and the modern classes
    "MultiHeadAttention": mha,
    "GroupedQueryAttention": lambda: npattn.GroupedQueryAttention(4, 4, 0.0, 2, 1, rng=0),
    "MultiHeadLatentAttention": lambda: npattn.MultiHeadLatentAttention(
        4, 4, 0.0, 2, latent_dim=3, rng=0
    ),
    "MultiHeadAttentionWithSWA": lambda: npattn.MultiHeadAttentionWithSWA(
        4, 4, 0.0, 2, sliding_window_size=2, rng=0
    ),
    "Qwen3Attention": lambda: npattn.Qwen3Attention(4, 2, 1, 2, context_length=6, rng=0),
}


# -- one dtype rule ------------------------------------------------------------------------


def test_load_state_dict_copies_into_the_modules_dtype():
    m = mha()
    sd = dict(m.state_dict())
    sd["out_proj.weight"] = sd["out_proj.weight"].astype(np.float16)
    m.load_state_dict(sd)
    assert {a.dtype for a in m.state_dict().values()} == {np.dtype(np.float32)}


@pytest.mark.parametrize("dtype", [np.int32, np.bool_, np.complex64, "bfloat16", object])
def test_astype_takes_floating_dtypes_only(dtype):
    m = mha()
    before = {k: v.copy() for k, v in m.state_dict().items()}
    with pytest.raises(TypeError, match="dtype must be a"):
        m.astype(dtype)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])  # nothing was zeroed


@pytest.mark.parametrize(
    "dtypes", [(np.float16, np.float32, np.float32), (np.float32,) * 2 + (np.float64,)]
)
def test_mixed_qkv_dtypes_promote_the_same_way_in_every_attention_op(dtypes):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 5, 4)) * 300 for _ in range(3))  # float16 would overflow
    q, k, v = (a.astype(d) for a, d in zip((q, k, v), dtypes))
    outs = {name: op(q, k, v)[0] for name, op in ATTENTION_OPS.items()}
    expected = np.result_type(*dtypes)
    for name, out in outs.items():
        assert out.dtype == expected, name
        assert np.isfinite(out).all(), name
        np.testing.assert_allclose(out, outs["sdpa"], rtol=1e-3, atol=1e-3, err_msg=name)


def test_bfloat16_and_requires_grad_tensors_are_read_as_their_values(tmp_path):
    x = torch.randn(2, 3, 4, requires_grad=True)
    m = mha()
    np.testing.assert_array_equal(m(x), m(x.detach().numpy()))  # detached, as users expect
    xb = x.detach().to(torch.bfloat16)
    np.testing.assert_array_equal(m(xb), m(xb.float().numpy()))  # bfloat16 -> float32
    y, _ = F.sdpa_forward(xb, xb, xb)
    assert y.dtype == np.float32
    port = tp.from_npattn(m).to(torch.bfloat16)
    tp.save_safetensors(port, tmp_path / "bf16.safetensors")
    loaded = npio.load_safetensors(mha().astype(np.float64), tmp_path / "bf16.safetensors")
    assert loaded.dtype == np.float64
    for key, value in port.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value.double().numpy(), key)
    np.testing.assert_array_equal(tp.to_npattn(port).state_dict()["mask"], m.mask)


# -- threads -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODULES)
def test_a_backward_after_another_threads_forward_raises(name):
    """Two threads, one module: forward, forward, backward, backward (in that order)."""
    m = MODULES[name]()
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    steps = [threading.Event() for _ in range(3)]
    results = {}

    def run(name, x, wait, done, wait_bwd, done_bwd):
        if wait is not None:
            wait.wait()
        m(x)
        done.set()
        if wait_bwd is not None:
            wait_bwd.wait()
        try:
            results[name] = m.backward(np.ones((2, 3, 4)))
        except RuntimeError as e:
            results[name] = e
        if done_bwd is not None:
            done_bwd.set()

    first = threading.Thread(target=run, args=("first", x, None, steps[0], steps[1], None))
    second = threading.Thread(target=run, args=("second", 2 * x, steps[0], steps[1], None, None))
    first.start()
    second.start()
    first.join()
    second.join()
    assert isinstance(results["first"], RuntimeError)
    assert "another thread's forward" in str(results["first"])
    single = MODULES[name]()
    single(2 * x)
    np.testing.assert_allclose(results["second"], single.backward(np.ones((2, 3, 4))), **F64)


def test_a_backward_in_a_thread_that_ran_no_forward_uses_the_last_forward():
    m = mha()
    x = np.random.default_rng(1).standard_normal((2, 3, 4))
    m(x)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("dx", m.backward(np.ones((2, 3, 4)))))
    t.start()
    t.join()
    np.testing.assert_allclose(out["dx"], m.backward(np.ones((2, 3, 4))), **F64)


@pytest.mark.parametrize("name", MODULES)
def test_a_no_grad_forward_in_another_thread_leaves_this_threads_cache(name):
    """no_grad is per thread: its forwards on other modules drop nothing here."""
    m, other = MODULES[name]().astype(np.float64), MODULES[name]()
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    dy = upstream((2, 3, 4))
    m(x)

    def infer():
        with npattn.no_grad():
            other(x)

    t = threading.Thread(target=infer)
    t.start()
    t.join()
    assert npattn.is_grad_enabled()
    ref = MODULES[name]().astype(np.float64)
    ref(x)
    np.testing.assert_array_equal(m.backward(dy), ref.backward(dy))
    with pytest.raises(RuntimeError, match=r"npattn\.no_grad\(\)"):
        other.backward(dy)


# -- weights: copied by the cache, never frozen --------------------------------------------


@pytest.mark.parametrize("name", MODULES)
def test_weights_edited_between_forward_and_backward_change_no_gradient(name):
    """Every parameter and x edited in place before the backward (weights stay writable: an
    optimizer step, load_state_dict and astype run at any time), with the reference
    gradients of the forward that ran; afterwards the same module trains on."""
    m, ref = MODULES[name]().astype(np.float64), MODULES[name]().astype(np.float64)
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    dy = upstream((2, 3, 4))
    ref(x.copy())
    dx_ref = ref.backward(dy)
    m(x)
    for w in m.parameters().values():
        assert w.flags.writeable
        w -= 0.1 * np.sign(w) + 0.05  # an SGD step, in place, before the backward
    x *= -2.0
    dx = m.backward(dy)
    np.testing.assert_array_equal(dx, dx_ref)
    for k, g in ref.grads.items():
        np.testing.assert_array_equal(m.grads[k], g, err_msg=k)
    for k, w in m.parameters().items():  # after the backward: the usual update
        w -= 0.01 * m.grads[k]
    with npattn.no_grad():
        m(x)
    m.load_state_dict(ref.state_dict())
    m.astype(np.float32).astype(np.float64)
    m(x)
    assert m.backward(dy).shape == x.shape


# -- validation of what used to be accepted ------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: npattn.GroupedQueryAttention(4, 4, 0.0, 2, 1, qkv_bias="no"),
        lambda: npattn.MultiHeadLatentAttention(4, 4, 0.0, 2, qkv_bias="no"),
        lambda: npattn.MultiHeadAttentionWithSWA(4, 4, 0.0, 2, qkv_bias="no"),
        lambda: npattn.Qwen3Attention(4, 2, 1, 2, qk_norm="no"),
    ],
    ids=["gqa", "mla", "swa", "qwen3"],
)
def test_the_modern_classes_take_bools_for_their_flags(make):
    with pytest.raises(TypeError, match=r"(qkv_bias|qk_norm) must be True or False"):
        make()


def test_the_modern_ops_take_numbers_only():
    x = np.ones((2, 3, 4))
    with pytest.raises(TypeError, match="softcap must be a float"):
        F.sdpa_forward(x, x, x, softcap="30")
    with pytest.raises(TypeError, match="theta_base must be a float"):
        F.compute_rope_params(4, "1e4", 6)
    with pytest.raises(TypeError, match="rope_base must be a float"):
        npattn.Qwen3Attention(4, 2, 1, 2, rope_base="1e4")
    with pytest.raises(TypeError, match="eps must be a float"):
        F.rmsnorm_forward(x, np.ones(4), eps="1e-6")
    with pytest.raises(ValueError, match="context_length, head_dim asks for cos/sin tables"):
        F.compute_rope_params(4, 1e4, 2**50)


def test_unsigned_positions_do_not_wrap_around():
    """p - r of unsigned positions would wrap to a huge number and attend the future."""
    for window in (None, 2):
        expected = F.position_mask(np.arange(3), np.arange(4), window=window)
        q, k = np.arange(3, dtype=np.uint8), np.arange(4, dtype=np.uint8)
        got = F.position_mask(q, k, window=window)
        np.testing.assert_array_equal(got, expected)
        assert not got[0, 1]  # query 0 does not see key 1


@pytest.mark.parametrize("value", ["0.1", True, None, [0.1]])
def test_dropout_and_scale_take_numbers_only(value):
    with pytest.raises(TypeError, match="dropout must be a float"):
        npattn.CausalAttention(4, 4, 6, value)
    q = np.ones((2, 3))
    if value is not None:
        with pytest.raises(TypeError, match="scale must be a float or None"):
            F.sdpa_forward(q, q, q, scale=value)


def test_rng_true_and_negative_seeds_are_refused():
    with pytest.raises(TypeError, match="rng must be"):
        npattn.Linear(2, 2, rng=True)
    with pytest.raises(ValueError, match="rng must be a seed >= 0"):
        F.dropout_keep_mask((2, 2), 0.5, rng=-3)


@pytest.mark.parametrize("cls", [npattn.CausalAttention, npattn.MultiHeadAttention])
def test_attn_impl_is_checked_when_set_after_construction(cls):
    m = cls(4, 4, 6, 0.0, *([2] if cls is npattn.MultiHeadAttention else []))
    with pytest.raises(ValueError, match="attn_impl must be one of"):
        m.attn_impl = "flash"
    assert m.attn_impl == "reference"
    m.attn_impl = "tiled"
    assert m.attn_impl == "tiled"


@pytest.mark.parametrize("dy", [np.ones((2, 3), complex), np.full((2, 3), "a"), None])
def test_softmax_backward_refuses_complex_and_string_dy(dy):
    y = F.softmax(np.ones((2, 3)))
    with pytest.raises(TypeError, match="dy must"):
        F.softmax_backward(dy, y)


def test_a_keep_mask_with_p_0_is_refused_by_dropout_and_sdpa_alike():
    keep = np.ones((2, 2), bool)
    with pytest.raises(ValueError, match="keep needs p > 0"):
        F.dropout_forward(np.ones((2, 2)), 0.0, keep=keep)
    with pytest.raises(ValueError, match="dropout_mask needs dropout_p > 0"):
        F.sdpa_forward(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)), dropout_mask=keep)
    with pytest.raises(ValueError, match="dropout_mask needs dropout_p > 0"):
        F.causal_sdpa_forward(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)), dropout_mask=keep)


def test_head_split_backward_takes_the_head_count_from_the_cache():
    x = np.ones((1, 2, 8))
    heads, cache = F.split_heads_forward(x, 2)  # (1, 2, 2, 4)
    with pytest.raises(
        ValueError, match=r"dout must have the forward output's shape \(1, 2, 2, 4\)"
    ):
        F.split_heads_backward(np.ones((1, 4, 2, 2)), cache)  # 4 heads of 2: same size
    qkv, cache = F.split_qkv_heads_forward(np.ones((1, 2, 24)), 2)
    with pytest.raises(ValueError, match="dqueries"):
        F.split_qkv_heads_backward(*(np.ones((1, 4, 2, 2)),) * 3, cache)


def test_each_bias_of_the_fused_projection_has_its_own_length():
    w = [np.ones((4, 3)), np.ones((4, 3))]
    with pytest.raises(ValueError, match=r"biases\[0\] must have shape \(4,\)"):
        F.fused_linear_forward(np.ones((2, 3)), w, [np.ones(3), np.ones(5)])  # 8 in all
    with pytest.raises(TypeError, match=r"biases\[1\]"):
        F.fused_linear_forward(np.ones((2, 3)), w, [np.ones(4), None])


@pytest.mark.parametrize("impl", ["reference", "blocked", "tiled"])
@pytest.mark.parametrize("cls", ["CausalAttention", "MultiHeadAttention", "Wrapper", "v1", "v2"])
def test_batch_size_0_gives_empty_outputs_on_every_path(cls, impl):
    m = {
        "CausalAttention": lambda: npattn.CausalAttention(4, 4, 6, 0.0, attn_impl=impl),
        "MultiHeadAttention": lambda: mha(attn_impl=impl),
        "Wrapper": lambda: npattn.MultiHeadAttentionWrapper(4, 2, 6, 0.0, 2),
        "v1": lambda: npattn.SelfAttention_v1(4, 4),
        "v2": lambda: npattn.SelfAttention_v2(4, 4),
    }[cls]()
    y = m(np.ones((0, 3, 4)))
    assert y.shape == (0, 3, 4)
    assert m.backward(np.ones(y.shape)).shape == (0, 3, 4)
    assert all(not g.any() for g in m.grads.values())
    q = np.ones((0, 2, 3, 4))
    for name, op in ATTENTION_OPS.items():
        assert op(q, q, q)[0].shape == (0, 2, 3, 4), name


@pytest.mark.parametrize("impl", ["reference", "blocked", "tiled"])
def test_dropout_1_is_valid_and_gives_zero_attention(impl):
    torch.manual_seed(0)
    port = tp.MultiHeadAttention(4, 4, 6, 1.0, 2).train()
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    m = tp.to_npattn(port, rng=0)
    m.attn_impl = impl
    y = m(x)
    np.testing.assert_allclose(y, port(torch.from_numpy(x)).detach().numpy(), **F64)
    np.testing.assert_array_equal(y, np.broadcast_to(m.out_proj.bias, y.shape))
    dx = m.backward(upstream(y.shape, dtype=np.float32))
    assert np.isfinite(dx).all() and not dx.any()
    out, cache = F.dropout_forward(np.ones(3), 1.0, rng=0)
    assert not out.any() and not F.dropout_backward(np.ones(3), cache).any()


# -- named errors instead of internal ones -------------------------------------------------


def test_internal_errors_become_named_ones(tmp_path):
    q = np.ones((2, 3, 0))
    for op in ATTENTION_OPS.values():
        with pytest.raises(ValueError, match="head dim >= 1"):
            op(q, q, np.ones((2, 3, 2)))
    with pytest.raises(
        ValueError, match=r"softmax needs at least one entry along axis -1: x has shape \(2, 0\)"
    ):
        F.softmax(np.ones((2, 0)))
    frozen = np.ones((2, 3))
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="x is read-only"):
        F.softmax_inplace(frozen)
    with pytest.raises(ValueError, match="context_length=10000000 needs a"):
        npattn.CausalAttention(2, 2, 10_000_000, 0.0)


@pytest.mark.parametrize(
    "entry, match",
    [
        (None, "must be an array, got None"),
        ([[1.0, 2.0], [3.0]], "must be an array of numbers"),
        (np.array([[1.0, None]] * 4, dtype=object), "must hold real numbers"),
        (np.ones((4, 4), complex), "must hold real numbers"),
    ],
)
def test_bad_state_dict_entries_are_named(entry, match):
    m = mha()
    sd = dict(m.state_dict(), **{"out_proj.weight": entry})
    with pytest.raises(TypeError, match=r"state_dict\['out_proj.weight'\] " + match):
        m.load_state_dict(sd)


def _bad_files(tmp_path):
    good = tmp_path / "good.safetensors"
    npio.save_safetensors(mha(), good)
    data = good.read_bytes()
    files = {
        "corrupt": b"\x00" * 64,
        "truncated": data[: len(data) // 2],
        "oversized header": (2**40).to_bytes(8, "little") + data[8:],
        "wrong dtype": data.replace(b'"F32"', b'"F8X"', 1),
        "pickle": pickle.dumps(mha().state_dict()),
    }
    for name, content in files.items():
        path = tmp_path / f"{name.replace(' ', '_')}.safetensors"
        path.write_bytes(content)
        yield name, path
    yield "directory", tmp_path


def test_bad_weight_files_raise_the_projects_error_naming_the_file(tmp_path):
    for name, path in _bad_files(tmp_path):
        for load in (
            lambda p: npio.load_safetensors(mha(), p),
            lambda p: tp.load_safetensors(tp.MultiHeadAttention(4, 4, 6, 0.0, 2), p),
        ):
            with pytest.raises(npio.WeightFileError, match=str(path.name)) as info:
                load(path)
            assert name == "directory" or info.value.__cause__ is not None, name
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        npio.load_safetensors(mha(), 3)


def test_conversions_refuse_the_wrong_kind_of_module():
    class MultiHeadAttention(torch.nn.Module):  # a look-alike: the name, not the weights
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(2, 2)

    with pytest.raises(TypeError, match="is named MultiHeadAttention but is not the chapter's"):
        tp.to_npattn(MultiHeadAttention())
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        tp.to_npattn(mha())
    with pytest.raises(TypeError, match="module must be an npattn module"):
        tp.from_npattn(tp.MultiHeadAttention(4, 4, 6, 0.0, 2))
    with pytest.raises(TypeError, match="convert it first: torch_port.from_npattn"):
        tp.MHAPyTorchScaledDotProduct.from_mha(mha())
    with pytest.raises(TypeError, match="mha must be a chapter MultiHeadAttention"):
        tp.MHAPyTorchScaledDotProduct.from_mha(MultiHeadAttention())
