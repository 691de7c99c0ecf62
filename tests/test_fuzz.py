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

    CI=true python tests/test_fuzz.py      # runs the test and prints its counts
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
MAX_EXAMPLES = int(os.environ.get("NPATTN_FUZZ_EXAMPLES", 300))  # 300: a few seconds
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
        {},
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


if __name__ == "__main__":
    import warnings

    import conftest  # noqa: F401 - the Hypothesis profile (CI=true: derandomised)

    warnings.simplefilter("ignore", RuntimeWarning)  # numpy's, for NaN and inf inputs
    test_bad_arguments_get_the_projects_own_errors()
    print(f"fuzz: {COUNTS.pop('examples')} examples; outcomes: {dict(COUNTS.most_common())}")
