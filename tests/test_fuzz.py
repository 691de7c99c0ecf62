"""Fuzzing the public API with bad arguments: every failure is the project's own error.

Each example takes one entry point (an op, a module method, a weight file, a conversion) with
good arguments and replaces one or two of them with something bad: a wrong type, shape or
dtype, NaN, a huge or negative int, None, a string, an object array, a ragged list, a
non-contiguous or read-only array, a torch tensor that requires grad. Then:
- a failure is a ValueError, TypeError, KeyError or RuntimeError (FileNotFoundError for a
  missing file), raised in npattn's or torch_port's own code (the traceback's last frame),
  whose message names one of the replaced arguments;
- no argument changed;
- a module that refused a call still computes what a fresh one does.

A second test plays random call sequences on the modules with a KV cache (the modern classes,
npattn.Attention, npattn.LatentAttention, MultiHeadAttention): cached calls, resets, full
forwards, backward, load_state_dict, astype, and bad calls among them. A twin module gets
every call but the refused ones; after each call both must agree (outputs, errors, cache,
shown weights, gradients): a refused call leaves the module as if it had never been made.
Every refusal is the project's own ValueError, TypeError or RuntimeError, and finite inputs
give finite outputs.

    CI=true python tests/test_fuzz.py      # runs both tests and prints their counts
"""

from __future__ import annotations

import collections
import copy
import os
import sys
import traceback

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import npattn  # noqa: E402
from npattn import functional as F  # noqa: E402
from npattn import io as npio  # noqa: E402

torch = pytest.importorskip("torch")
import torch_port as tp  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT_DIRS = tuple(os.path.join(ROOT, d) + os.sep for d in ("npattn", "torch_port"))
PROJECT_ERRORS = (ValueError, TypeError, KeyError, RuntimeError, FileNotFoundError)
THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"  # the long run: 10x the examples
MAX_EXAMPLES = int(os.environ.get("NPATTN_FUZZ_EXAMPLES", 3000 if THOROUGH else 300))
COUNTS: collections.Counter = collections.Counter()  # outcome -> examples, for __main__

B, T, D, H, CTX = 2, 3, 4, 2, 5


def _arrays():
    """Arrays of every dtype numpy has a strategy for, small, any values (NaN and inf too)."""
    dtypes = st.sampled_from(
        [np.float64, np.float32, np.float16, np.int64, np.uint8, np.bool_, np.complex128]
    )
    shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
    return hnp.arrays(dtypes, shapes)


@st.composite
def _odd_layouts(draw):
    """A float array that is non-contiguous or read-only."""
    a = draw(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=4, max_side=4)))
    if draw(st.booleans()):
        a = np.repeat(a, 2, axis=-1)[..., ::2]  # the same values, strided
    else:
        a = a.copy()
        a.flags.writeable = False
    return a


def bad_values():
    return st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from([0, -1, 3, 2**40, -(2**70), 2**70]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.complex_numbers(max_magnitude=2),
        st.text(max_size=4),
        st.sampled_from(["reference", "blocked", "tiled", "0.1", "float32", "bfloat16"]),
        _arrays(),
        _odd_layouts(),
        st.just([[1.0, 2.0], [3.0]]),  # ragged
        st.just(np.array([1.0, None, "a"], dtype=object)),
        st.just({"a": 1}),
        st.just(np.float32),
        st.builds(lambda a: torch.tensor(a, requires_grad=True), hnp.arrays(np.float32, (B, T, D))),
        st.builds(lambda a: torch.tensor(a).to(torch.bfloat16), hnp.arrays(np.float32, (2, 3))),
    )


def _x(*shape):
    return np.random.default_rng(0).standard_normal(shape)


def _mha(**kw):
    args = dict(d_in=D, d_out=D, context_length=CTX, dropout=0.0, num_heads=H, rng=0)
    return npattn.MultiHeadAttention(**{**args, **kw})


def _backward_of(forward, **good):
    """Good arguments for backward(dout, cache) after a forward on `good`."""
    return dict(dout=_x(*forward(**good)[0].shape), cache=forward(**good)[1])


def _set_attn_impl(_module, value):
    _module.attn_impl = value


# name -> (function, good keyword arguments, aliases: argument -> words its errors use)
TARGETS = {
    "softmax": (F.softmax, lambda: dict(x=_x(2, 3), axis=-1), {}),
    "softmax_backward": (
        F.softmax_backward,
        lambda: dict(dy=_x(2, 3), y=F.softmax(_x(2, 3)), axis=-1),
        {},
    ),
    "linear_forward": (
        F.linear_forward,
        lambda: dict(x=_x(B, T, D), weight=_x(3, D), bias=_x(3)),
        {},
    ),
    "fused_linear_forward": (
        F.fused_linear_forward,
        lambda: dict(x=_x(B, D), weights=[_x(2, D), _x(3, D)], biases=[_x(2), _x(3)]),
        {},
    ),
    "dropout_forward": (
        F.dropout_forward,
        lambda: dict(x=_x(2, 3), p=0.5, rng=0, keep=np.ones((2, 3), bool)),
        {},
    ),
    "dropout_keep_mask": (F.dropout_keep_mask, lambda: dict(shape=(2, 3), p=0.5, rng=0), {}),
    "causal_mask": (F.causal_mask, lambda: dict(L=3, S=4), {}),
    "sdpa_forward": (
        F.sdpa_forward,
        lambda: dict(
            q=_x(2, 3, 4),
            k=_x(2, 5, 4),
            v=_x(2, 5, 2),
            attn_mask=np.ones((3, 5), bool),
            dropout_p=0.5,
            is_causal=False,
            scale=0.5,
            enable_gqa=False,
            rng=0,
        ),
        {"q": ("query",), "k": ("key",), "v": ("value",)},
    ),
    "causal_sdpa_forward": (
        F.causal_sdpa_forward,
        lambda: dict(
            q=_x(2, 3, 4),
            k=_x(2, 5, 4),
            v=_x(2, 5, 2),
            dropout_p=0.5,
            scale=None,
            rng=0,
            block_size=2,
        ),
        {"q": ("query",), "k": ("key",), "v": ("value",)},
    ),
    "flash_attention_forward": (
        F.flash_attention_forward,
        lambda: dict(
            q=_x(2, 3, 4),
            k=_x(2, 5, 4),
            v=_x(2, 5, 2),
            attn_mask=None,
            is_causal=True,
            scale=None,
            block_size=2,
            dropout_p=0.5,
            rng=0,
        ),
        {"q": ("query",), "k": ("key",), "v": ("value",)},
    ),
    "sdpa_backward": (
        F.sdpa_backward,
        lambda: _backward_of(F.sdpa_forward, q=_x(2, 3, 4), k=_x(2, 3, 4), v=_x(2, 3, 2)),
        {},
    ),
    "flash_attention_backward": (
        F.flash_attention_backward,
        lambda: _backward_of(F.flash_attention_forward, q=_x(3, 4), k=_x(3, 4), v=_x(3, 2)),
        {},
    ),
    "split_heads_forward": (F.split_heads_forward, lambda: dict(x=_x(B, T, D), num_heads=H), {}),
    "merge_heads_backward": (
        F.merge_heads_backward,
        lambda: dict(dout=_x(B, T, D), cache=F.merge_heads_forward(_x(B, H, T, 2))[1]),
        {},
    ),
    "mask_scores_forward": (
        F.mask_scores_forward,
        lambda: dict(attn_scores=_x(2, 3, 3), mask=np.tri(3, dtype=bool)),
        {},
    ),
    "simple_self_attention": (
        F.simple_self_attention,
        lambda: dict(x=_x(T, D)),
        {"x": ("inputs",)},
    ),
    # the modern ops: RoPE, RMSNorm, soft-capping, sinks, window and padding masks
    "compute_rope_params": (
        F.compute_rope_params,
        lambda: dict(head_dim=4, theta_base=1e4, context_length=CTX, freq_config=None),
        {},
    ),
    "rope_forward": (
        F.rope_forward,
        lambda: dict(x=_x(B, H, T, 4), cos=_rope()[0], sin=_rope()[1], offset=1),
        {},
    ),
    "rmsnorm_forward": (F.rmsnorm_forward, lambda: dict(x=_x(B, T, D), scale=_x(D), eps=1e-6), {}),
    "rmsnorm_forward(offset)": (
        F.rmsnorm_forward,
        lambda: dict(x=_x(B, T, D), scale=_x(D), eps=1e-6, offset=1.0),
        {},
    ),
    "rope_apply_forward": (
        F.rope_apply_forward,
        lambda: dict(
            x=_x(B, H, T, 6), cos_t=_x(B, 1, T, 4), sin_t=_x(B, 1, T, 4), interleaved=True
        ),
        {},
    ),
    "RoPE": (
        npattn.RoPE,
        lambda: dict(theta=1e4, fraction=0.5, interleaved=False, scaling=npattn.YaRN(4.0, 8)),
        {},
    ),
    "YaRN": (
        npattn.YaRN,
        lambda: dict(
            factor=4.0,
            original_max_position_embeddings=8,
            beta_fast=32.0,
            beta_slow=1.0,
            mscale=1.0,
            mscale_all_dim=0.8,
            attention_factor=None,
            truncate=True,
        ),
        {},
    ),
    "RoPE.tables": (
        lambda _rope, head_dim, positions: _rope.tables(head_dim, positions),
        lambda: dict(
            _rope=npattn.RoPE(fraction=0.5, scaling=npattn.DynamicNTK(2.0, 4)),
            head_dim=8,
            positions=np.array([[0, 1, 2], [4, 5, 6]]),
        ),
        {},
    ),
    "softcap_forward": (F.softcap_forward, lambda: dict(scores=_x(2, 3, 3), cap=5.0), {}),
    "softmax_with_sink_forward": (
        F.softmax_with_sink_forward,
        lambda: dict(attn_scores=_x(B, H, T, T), sinks=_x(H)),
        {},
    ),
    "sdpa_forward(softcap, sinks)": (
        F.sdpa_forward,
        lambda: dict(
            q=_x(B, H, T, 2),
            k=_x(B, 1, T, 2),
            v=_x(B, 1, T, 2),
            is_causal=True,
            enable_gqa=True,
            softcap=5.0,
            sinks=_x(H),
        ),  # fmt: skip
        {"q": ("query",), "k": ("key",), "v": ("value",)},
    ),
    "sliding_window_mask": (F.sliding_window_mask, lambda: dict(L=3, S=4, window=2), {}),
    "position_mask": (
        F.position_mask,
        lambda: dict(q_positions=np.arange(2, 4), k_positions=np.arange(4), window=2),
        {},
    ),
    "key_padding_mask": (F.key_padding_mask, lambda: dict(lengths=np.array([1, 3]), S=3), {}),
    # the modern classes: construction, and a forward with their keyword arguments
    "GroupedQueryAttention": (
        npattn.GroupedQueryAttention,
        lambda: dict(
            d_in=D, d_out=D, dropout=0.1, num_heads=H, num_kv_groups=1, qkv_bias=True, rng=0
        ),  # fmt: skip
        {},
    ),
    "MultiHeadLatentAttention": (
        npattn.MultiHeadLatentAttention,
        lambda: dict(
            d_in=D, d_out=D, dropout=0.1, num_heads=H, qkv_bias=False, latent_dim=3, rng=0
        ),  # fmt: skip
        {},
    ),
    "MultiHeadAttentionWithSWA": (
        npattn.MultiHeadAttentionWithSWA,
        lambda: dict(
            d_in=D, d_out=D, dropout=0.1, num_heads=H, qkv_bias=False, sliding_window_size=2, rng=0
        ),  # fmt: skip
        {},
    ),
    "Qwen3Attention": (
        npattn.Qwen3Attention,
        lambda: dict(
            d_in=D,
            num_heads=H,
            num_kv_groups=1,
            head_dim=2,
            qk_norm=True,
            rope_base=1e4,
            context_length=CTX,
            rope_freq_config=None,
            rng=0,
        ),  # fmt: skip
        {"rope_freq_config": ("freq_config",)},  # compute_rope_params' name for it
    ),
    "gqa(x, x_kv, key_padding_mask)": (
        lambda _module, x, x_kv, key_padding_mask: _module(
            x, x_kv=x_kv, key_padding_mask=key_padding_mask
        ),
        lambda: dict(
            _module=_modern("GroupedQueryAttention"),
            x=_x(B, T, D),
            x_kv=_x(B, 4, D),
            key_padding_mask=np.ones((B, 4), bool),
        ),  # fmt: skip
        # x_kv=None is self-attention: the mask, sized for x_kv, is then the one at fault
        {"x_kv": ("key_padding_mask",)},
    ),
    "qwen3(x, use_cache)": (
        lambda _module, x, use_cache: _module(x, use_cache),
        lambda: dict(_module=_modern("Qwen3Attention"), x=_x(B, T, D), use_cache=True),
        {},
    ),
    "modern.backward": (
        lambda _module, dout: _module.backward(dout),
        lambda: dict(_module=_ran(_modern("MultiHeadLatentAttention")), dout=_x(B, T, D)),
        {"dout": ("dout", "dcontext")},
    ),
    "AttentionConfig": (
        npattn.AttentionConfig,
        lambda: dict(
            hidden_size=D,
            num_heads=H,
            num_kv_heads=1,
            head_dim=2,
            qkv_bias=True,
            out_bias=False,
            dropout=0.1,
            qk_norm=npattn.QKNorm(),
            rope=npattn.RoPE(),
            scale=None,
            window=3,
            softcap=5.0,
            sinks=True,
            causal=True,
            d_out=None,
        ),  # fmt: skip
        {},
    ),
    "Attention": (
        npattn.Attention,
        lambda: dict(config=_attention_config(), rng=0, attn_impl="tiled"),
        {},
    ),
    "attention(x, use_cache, positions, key_padding_mask)": (
        lambda _module, x, use_cache, positions, key_padding_mask: _module(
            x, use_cache, positions=positions, key_padding_mask=key_padding_mask
        ),
        lambda: dict(
            _module=npattn.Attention(_attention_config(), rng=0).astype(np.float64),
            x=_x(B, T, D),
            use_cache=True,
            positions=np.arange(T),
            key_padding_mask=np.ones((B, T), bool),
        ),  # fmt: skip
        {},
    ),
    "LatentConfig": (
        npattn.LatentConfig,
        lambda: dict(
            hidden_size=D,
            num_heads=H,
            q_lora_rank=3,
            kv_lora_rank=3,
            qk_nope_head_dim=2,
            qk_rope_head_dim=2,
            v_head_dim=2,
            qkv_bias=False,
            out_bias=False,
            norm_eps=1e-6,
            rope=npattn.RoPE(),
            scale=None,
            dropout=0.1,
        ),  # fmt: skip
        {},
    ),
    "latent(x, use_cache, positions, key_padding_mask)": (
        lambda _module, x, use_cache, positions, key_padding_mask: _module(
            x, use_cache, positions=positions, key_padding_mask=key_padding_mask
        ),
        lambda: dict(
            _module=npattn.LatentAttention(
                npattn.LatentConfig(D, H, None, 3, 2, 2, 2, rope=npattn.RoPE()), rng=0
            ).astype(np.float64),
            x=_x(B, T, D),
            use_cache=False,
            positions=np.arange(T),
            key_padding_mask=np.ones((B, T), bool),
        ),  # fmt: skip
        {},
    ),
    "MultiHeadAttention": (
        npattn.MultiHeadAttention,
        lambda: dict(
            d_in=D,
            d_out=D,
            context_length=CTX,
            dropout=0.1,
            num_heads=H,
            qkv_bias=False,
            rng=0,
            attn_impl="blocked",
        ),
        {},
    ),
    "module(x)": (lambda _module, x: _module(x), lambda: dict(_module=_mha(), x=_x(B, T, D)), {}),
    "module.backward": (
        lambda _module, dout: _module.backward(dout),
        lambda: dict(_module=_ran(_mha()), dout=_x(B, T, D)),
        {"dout": ("dout", "dcontext")},
    ),
    "module.load_state_dict": (
        lambda _module, entry: _module.load_state_dict({**_module.state_dict(), "mask": entry}),
        lambda: dict(_module=_mha(), entry=np.zeros((CTX, CTX))),
        {"entry": ("state_dict['mask']",)},
    ),
    "module.astype": (
        lambda _module, dtype: _module.astype(dtype),
        lambda: dict(_module=_mha(), dtype=np.float64),
        {},
    ),
    "module.attn_impl": (
        _set_attn_impl,
        lambda: dict(_module=_mha(), value="tiled"),
        {"value": ("attn_impl",)},
    ),
    "io.load_safetensors": (
        npio.load_safetensors,
        lambda: dict(module=_mha(), path=os.path.join(ROOT, "tests")),
        {},
    ),
    "to_npattn": (tp.to_npattn, lambda: dict(module=tp.MultiHeadAttention(D, D, CTX, 0.0, H)), {}),
    "from_npattn": (tp.from_npattn, lambda: dict(module=_mha()), {}),
    "from_mha": (
        tp.MHAPyTorchScaledDotProduct.from_mha,
        lambda: dict(mha=tp.MultiHeadAttention(D, D, CTX, 0.0, H)),
        {},
    ),
}


def _attention_config():
    return npattn.AttentionConfig(
        hidden_size=D, num_heads=H, num_kv_heads=1, head_dim=2, sinks=True, softcap=5.0,
        window=3, rope=npattn.RoPE(), qk_norm=npattn.QKNorm(), dropout=0.1,
    )  # fmt: skip


def _rope():
    return F.compute_rope_params(4, 1e4, CTX)


def _modern(name):
    """A small module of a modern class, float64 (fresh each time: a call may change it)."""
    return TARGETS[name][0](**TARGETS[name][1]()).astype(np.float64)


def _ran(module):
    module(_x(B, T, D))
    return module


def _snapshot(value):
    """A copy to compare with after the call (torch tensors and modules as their state)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (npattn.Module, torch.nn.Module)):
        return {
            k: np.array(v.detach() if hasattr(v, "detach") else v, copy=True)
            for k, v in value.state_dict().items()
        }
    return copy.deepcopy(value)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a.detach(), b) or bool(torch.isnan(b).any())
    if isinstance(b, npattn.Module):
        return True  # changed by design (load_state_dict, astype); _still_works checks refusals
    if isinstance(b, torch.nn.Module):  # converted, never changed
        return a.keys() == b.state_dict().keys() and all(
            np.array_equal(a[k], v.detach().numpy()) for k, v in b.state_dict().items()
        )
    if isinstance(a, np.ndarray):
        if a.dtype == object:
            return a.shape == b.shape and all(x is y or x == y for x, y in zip(a.flat, b.flat))
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and np.isnan(a):
        return np.isnan(b)
    return a is b or a == b


def _check_project_error(e: BaseException, names: list, aliases: dict) -> None:
    assert isinstance(e, PROJECT_ERRORS), f"{type(e).__name__}: {e}"
    last = traceback.extract_tb(e.__traceback__)[-1].filename
    assert last.startswith(PROJECT_DIRS), f"{type(e).__name__} raised in {last}: {e}"
    words = [w for n in names for w in (n, *aliases.get(n, ()))]
    assert any(w in str(e) for w in words), f"{type(e).__name__} names none of {words}: {e}"


def _still_works(module) -> None:
    """After a refused call, the module computes what a fresh one does (forward, backward)."""
    if not isinstance(module, npattn.MultiHeadAttention):
        return
    fresh = _mha().astype(module.dtype)
    fresh.load_state_dict(module.state_dict())
    x, g = _x(B, T, D), _x(B, T, D)
    np.testing.assert_array_equal(module(x), fresh(x))
    np.testing.assert_array_equal(module.backward(g), fresh.backward(g))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's, for NaN and inf inputs
@settings(max_examples=MAX_EXAMPLES)
@given(data=st.data())
def test_bad_arguments_get_the_projects_own_errors(data):
    name = data.draw(st.sampled_from(sorted(TARGETS)), label="target")
    fn, good, aliases = TARGETS[name]
    kwargs = good()
    # the arguments a user gives: not a cache (what the forward returned, opaque) nor the
    # module a method runs on (names starting with "_")
    fuzzed = sorted(k for k in kwargs if k != "cache" and not k.startswith("_"))
    names = data.draw(
        st.lists(st.sampled_from(fuzzed), min_size=1, max_size=2, unique=True),
        label="replaced",
    )
    for n in names:
        kwargs[n] = data.draw(bad_values(), label=n)
    before = {k: _snapshot(v) for k, v in kwargs.items()}
    try:
        fn(**kwargs)
        outcome = "accepted"
    except Exception as e:  # noqa: BLE001 - every exception is checked here
        _check_project_error(e, names, aliases)
        outcome = type(e).__name__
        for value in kwargs.values():
            _still_works(value)
    for k, value in kwargs.items():
        assert _same(before[k], value), f"{name} changed its argument {k}"
    COUNTS[outcome] += 1
    COUNTS["examples"] += 1


# -- decoding sequences -------------------------------------------------------------------------

SEQ_EXAMPLES = int(os.environ.get("NPATTN_FUZZ_SEQUENCES", 600 if THOROUGH else 60))
SEQ_COUNTS: collections.Counter = collections.Counter()  # op outcome -> count, for __main__


def _latent_attention():
    cfg = npattn.LatentConfig(
        hidden_size=D, num_heads=H, q_lora_rank=3, kv_lora_rank=3, qk_nope_head_dim=2,
        qk_rope_head_dim=2, v_head_dim=2, rope=npattn.RoPE(), dropout=0.2,
    )  # fmt: skip
    return npattn.LatentAttention(cfg, rng=0)


def _attention(impl="reference"):
    cfg = npattn.AttentionConfig(
        hidden_size=D, num_heads=H, num_kv_heads=1, head_dim=2, dropout=0.2, sinks=True,
        softcap=5.0, window=3, rope=npattn.RoPE(fraction=1.0), qk_norm=npattn.QKNorm(),
        qkv_bias=True,
    )  # fmt: skip
    return npattn.Attention(cfg, rng=0, attn_impl=impl)


def _absorbed_mla():
    m = npattn.MultiHeadLatentAttention(D, D, 0.2, H, qkv_bias=True, latent_dim=3, rng=0)
    m.absorbed = True
    return m


DECODERS = {  # (B, T, D) -> (B, T, D), a KV cache, dropout where the class has one
    "Attention": _attention,
    "Attention tiled": lambda: _attention("tiled"),
    "LatentAttention": _latent_attention,
    "GroupedQueryAttention": lambda: npattn.GroupedQueryAttention(D, D, 0.2, H, 1, rng=0),
    "MultiHeadAttentionWithSWA": lambda: npattn.MultiHeadAttentionWithSWA(
        D, D, 0.2, H, sliding_window_size=2, rng=0
    ),
    "Qwen3Attention": lambda: npattn.Qwen3Attention(D, H, 1, 2, context_length=CTX * 3, rng=0),
    "MultiHeadLatentAttention": lambda: npattn.MultiHeadLatentAttention(
        D, D, 0.2, H, latent_dim=3, rng=0
    ),
    "MultiHeadLatentAttention absorbed": _absorbed_mla,
    "MultiHeadAttention": lambda: npattn.MultiHeadAttention(D, D, CTX * 3, 0.2, H, rng=0),
}
PADDING = ("Attention", "LatentAttention", "GroupedQueryAttention", "MultiHeadAttentionWithSWA",
           "Qwen3Attention", "MultiHeadLatentAttention")  # fmt: skip
POSITIONS = ("Attention", "LatentAttention", "GroupedQueryAttention", "Qwen3Attention")


def _observed(m) -> list:
    """What a user can see of a module: cache, position, shown weights, mode, dtype, grads."""
    cache = [m._kv.held(i) for i in range(len(m._kv_names))]  # the held positions
    grads = m.grads
    return [
        m.ptr_current_pos, m.cache_nbytes, m.training, m.dtype,
        [None if c is None else np.array(c) for c in cache],
        None if m.attn_weights is None else np.array(m.attn_weights),
        None if m.dropout_mask is None else np.array(m.dropout_mask),
        {k: np.array(g) for k, g in sorted(grads.items())},
    ]  # fmt: skip


def _agree(a, b, what: str) -> None:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), what
        assert a.dtype == b.dtype and a.shape == b.shape, what
        np.testing.assert_array_equal(a, b, err_msg=what)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            _agree(x, y, f"{what}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            _agree(a[k], b[k], f"{what}[{k}]")
    else:
        assert a == b, f"{what}: {a!r} != {b!r}"


def _output(result):
    """A call's array result, or None (astype and train return the module itself)."""
    return result if isinstance(result, np.ndarray) else None


def _run(call):
    """(result, None) or (None, exception)."""
    try:
        return call(), None
    except Exception as e:  # noqa: BLE001 - every exception is checked by the caller
        return None, e


def _check_refusal(e: BaseException) -> None:
    assert isinstance(e, (ValueError, TypeError, RuntimeError)), f"{type(e).__name__}: {e}"
    last = traceback.extract_tb(e.__traceback__)[-1].filename
    assert last.startswith(PROJECT_DIRS), f"{type(e).__name__} raised in {last}: {e}"


@st.composite
def _ops(draw, name):
    """One call: (kind, arguments), drawn from good calls and bad ones."""
    kind = draw(
        st.sampled_from(
            ["decode"] * 4
            + ["full", "backward"] * 3
            + ["reset", "load", "astype", "train"]
            + ["bad"] * 4
        )
    )
    seed = draw(st.integers(0, 2**16))
    if kind in ("decode", "full"):
        T = draw(st.integers(1, 3))
        B = draw(st.sampled_from([B_SEQ, B_SEQ, 1]))
        extra = {}
        if kind == "full" and name in PADDING and draw(st.booleans()):
            kpm = np.random.default_rng(seed).random((B, T)) < 0.7
            kpm[:, 0] = True
            extra["key_padding_mask"] = kpm
        return kind, (B, T, seed, extra)
    if kind == "astype":
        return kind, draw(st.sampled_from([np.float64, np.float64, np.float32]))
    if kind == "train":
        return kind, draw(st.booleans())
    if kind != "bad":
        return kind, seed
    what = ["x", "use_cache", "dout", "state_dict", "dtype", "mode", "batch"]
    what += ["key_padding_mask"] * (name in PADDING) + ["positions"] * (name in POSITIONS)
    return kind, (draw(st.sampled_from(what)), draw(bad_values()), seed)


B_SEQ = 2


def _good_call(m, kind, args, last_T):
    """The call `kind` on m, as a thunk (the same for m and its twin)."""
    if kind in ("decode", "full"):
        B, T, seed, extra = args
        x = np.random.default_rng(seed).standard_normal((B, T, D))
        return lambda: m(x, use_cache=kind == "decode", **extra)
    if kind == "backward":
        g = np.random.default_rng(args).standard_normal((*last_T, D))  # the last output's
        return lambda: m.backward(g)
    if kind == "reset":
        return m.reset_cache
    if kind == "load":
        sd = {k: np.array(v) for k, v in m.state_dict().items()}
        return lambda: m.load_state_dict(sd)
    if kind == "astype":
        return lambda: m.astype(args)
    return lambda: m.train(args)


def _bad_call(m, args, last_T):
    what, value, seed = args
    x = np.random.default_rng(seed).standard_normal((B_SEQ, 1, D))
    x_full = np.random.default_rng(seed).standard_normal((*last_T, D))
    if what == "x":
        return lambda: m(value, use_cache=seed % 2 == 0)
    if what == "use_cache":
        return lambda: m(x, use_cache=value)
    if what == "key_padding_mask":  # a full forward of the last one's length
        return lambda: m(x_full, key_padding_mask=value)
    if what == "positions":
        return lambda: m(x, use_cache=True, positions=value)
    if what == "dout":
        return lambda: m.backward(value)
    if what == "state_dict":
        key = sorted(m.state_dict())[seed % len(m.state_dict())]
        return lambda: m.load_state_dict({**m.state_dict(), key: value})
    if what == "dtype":
        return lambda: m.astype(value)
    if what == "mode":
        return lambda: m.train(value)
    return lambda: m(np.random.default_rng(seed).standard_normal((B_SEQ + 1, 1, D)), True)


def _replay(args):
    """A bad call the module accepted, for the twin: the same value, the same call."""
    what, value, seed = args
    return copy.deepcopy(value) if isinstance(value, np.ndarray) else value


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's, for NaN and inf inputs
@settings(max_examples=SEQ_EXAMPLES)
@given(data=st.data())
def test_decoding_sequences_keep_a_refused_call_invisible(data):
    name = data.draw(st.sampled_from(sorted(DECODERS)), label="module")
    m, twin = DECODERS[name]().astype(np.float64), DECODERS[name]().astype(np.float64)
    ops = data.draw(st.lists(_ops(name), min_size=1, max_size=16), label="calls")
    last_T = (B_SEQ, 1)
    for kind, args in ops:
        if kind == "bad":
            given_value = _snapshot(args[1])
            result, error = _run(_bad_call(m, args, last_T))
            if error is None:  # accepted: a good call after all, which the twin makes too
                twin_args = (args[0], _replay(args), args[2])
                twin_result, twin_error = _run(_bad_call(twin, twin_args, last_T))
                assert twin_error is None, f"{name}: twin refused {args[0]}: {twin_error}"
                flag = args[0] in ("use_cache", "mode")  # flags: True or False only
                assert not flag or isinstance(args[1], (bool, np.bool_)), f"{name}: {args}"
                _agree(_output(result), _output(twin_result), f"{name} accepted {args[0]}")
                SEQ_COUNTS["bad call accepted"] += 1
            else:
                _check_refusal(error)
                SEQ_COUNTS[f"refused: {type(error).__name__}"] += 1
            assert _same(given_value, args[1]), f"{name} changed the argument {args[0]}"
        else:
            result, error = _run(_good_call(m, kind, args, last_T))
            twin_result, twin_error = _run(_good_call(twin, kind, args, last_T))
            assert type(error) is type(twin_error), f"{name} {kind}: {error!r} {twin_error!r}"
            if error is not None:
                _check_refusal(error)  # a rule: decoding after new weights, say
                SEQ_COUNTS[f"{kind}: {type(error).__name__}"] += 1
            else:
                if kind in ("decode", "full"):
                    finite = all(np.isfinite(v).all() for v in m.state_dict().values())
                    assert not finite or np.all(np.isfinite(result)), f"{name} {kind}: NaN"
                    if kind == "full":
                        last_T = result.shape[:2]  # (B, T) of the last full forward
                _agree(_output(result), _output(twin_result), f"{name} {kind}")
                SEQ_COUNTS[f"{kind}: ok"] += 1
        _agree(_observed(m), _observed(twin), f"{name} after {kind}")
    SEQ_COUNTS["sequences"] += 1
    SEQ_COUNTS["calls"] += len(ops)


if __name__ == "__main__":
    import warnings

    import conftest  # noqa: F401 - the Hypothesis profile (CI=true: derandomised)

    warnings.simplefilter("ignore", RuntimeWarning)  # numpy's, for NaN and inf inputs
    test_bad_arguments_get_the_projects_own_errors()
    print(f"fuzz: {COUNTS.pop('examples')} examples; outcomes: {dict(COUNTS.most_common())}")
    test_decoding_sequences_keep_a_refused_call_invisible()
    print(
        f"decoding: {SEQ_COUNTS.pop('sequences')} sequences, {SEQ_COUNTS.pop('calls')} calls; "
        f"outcomes: {dict(SEQ_COUNTS.most_common())}"
    )
