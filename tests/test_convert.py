"""torch_port.convert and npattn.io: npattn <-> torch modules with the same weights, and
safetensors files written and read from both sides. Shapes: x (B, T, d_in)."""

import json
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import attention_configs, constructor_args
from tolerances import F64

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
pytest.importorskip("safetensors", reason="safetensors is not installed (pip install '.[torch]')")
import chapter_ch03 as ch  # noqa: E402
from helpers import upstream  # noqa: E402

import npattn  # noqa: E402
import torch_port as tp  # noqa: E402
from npattn import io as npio  # noqa: E402

CONVERT_F64 = dict(rtol=1e-12, atol=1e-12)  # to/from round trips
NAMES = tp.convert.CHAPTER_CLASSES


def npattn_module(name, cfg, dropout=0.0, dtype=np.float64):
    args = constructor_args(name, cfg, dropout)
    return getattr(npattn, name)(*args, rng=cfg["seed"]).astype(dtype)


def assert_same_state(a: dict, b: dict):
    """Same keys in the same order, same dtypes, bitwise equal values."""
    assert list(a) == list(b)
    for key in a:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        assert x.dtype == y.dtype and x.shape == y.shape, key
        np.testing.assert_array_equal(x, y, err_msg=key)


def torch_state(module):
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name", NAMES)
@given(cfg=attention_configs(), dtype=st.sampled_from([np.float32, np.float64]))
def test_round_trips_are_exact(name, cfg, dtype):
    ref = npattn_module(name, cfg, dropout=0.25, dtype=dtype).eval()
    port = tp.from_npattn(ref)
    assert type(port) is getattr(tp, name) and not port.training
    assert_same_state(torch_state(port), ref.state_dict())
    back = tp.to_npattn(port)
    assert type(back) is type(ref) and not back.training
    assert_same_state(back.state_dict(), ref.state_dict())
    assert (
        tp.convert._dropout_of(back)
        == tp.convert._dropout_of(port)
        == (0.0 if name.startswith("SelfAttention") else 0.25)
    )
    assert_same_state(torch_state(tp.from_npattn(back)), torch_state(port))


@pytest.mark.parametrize("name", NAMES)
@given(cfg=attention_configs())
def test_converted_modules_compute_the_same_in_float64(name, cfg):
    ref = npattn_module(name, cfg)
    port = tp.from_npattn(ref)
    x = np.random.default_rng(cfg["seed"]).standard_normal((cfg["B"], cfg["T"], cfg["d_in"]))
    y = ref(x)
    g = upstream(y.shape, cfg["seed"])
    dx = ref.backward(g)
    tx = torch.tensor(x, requires_grad=True)
    ty = port(tx)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(ty.detach().numpy(), y, **CONVERT_F64)
    np.testing.assert_allclose(tx.grad.numpy(), dx, **CONVERT_F64)
    for key, grad in ref.grads.items():
        np.testing.assert_allclose(port.get_parameter(key).grad.numpy(), grad, **CONVERT_F64)


def test_to_npattn_takes_the_books_own_classes():
    torch.manual_seed(0)
    book = ch.MultiHeadAttention(3, 4, 5, 0.1, num_heads=2).double().eval()
    ref = tp.to_npattn(book)
    assert isinstance(ref, npattn.MultiHeadAttention) and ref.dropout == 0.1
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    np.testing.assert_allclose(ref(x), book(torch.tensor(x)).detach().numpy(), **F64)


def test_unknown_classes_are_refused():
    with pytest.raises(TypeError, match="chapter's classes"):
        tp.to_npattn(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="chapter's classes"):
        tp.from_npattn(npattn.Linear(2, 2))


def read_header(path):
    """A .safetensors file starts with an 8-byte length and a JSON header: no pickle."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


@pytest.mark.parametrize("name", NAMES)
def test_safetensors_files_cross_both_ways(name, tmp_path):
    cfg = dict(d_in=3, d_out=4, num_heads=2, context_length=5, qkv_bias=True, seed=4)
    ref = npattn_module(name, cfg)
    npio.save_safetensors(ref, tmp_path / "np.safetensors")
    assert read_header(tmp_path / "np.safetensors")["__metadata__"]["class"] == name
    port = tp.from_npattn(npattn_module(name, dict(cfg, seed=5)))  # other weights, float64
    tp.load_safetensors(port, tmp_path / "np.safetensors")
    assert_same_state(torch_state(port), ref.state_dict())

    tp.save_safetensors(port, tmp_path / "pt.safetensors")
    other = npattn_module(name, dict(cfg, seed=6), dtype=np.float32)
    loaded = npio.load_safetensors(other, tmp_path / "pt.safetensors")
    assert loaded is other
    assert other.dtype == np.float32  # values take the module's dtype, as torch's loading does
    other.astype(np.float64)
    npio.load_safetensors(other, tmp_path / "pt.safetensors")
    assert_same_state(other.state_dict(), ref.state_dict())  # float64 kept in a float64 module


def test_torch_load_casts_to_the_modules_dtype_and_is_strict(tmp_path):
    ref = npattn.MultiHeadAttention(3, 4, 5, 0.0, 2, rng=0).astype(np.float64)
    npio.save_safetensors(ref, tmp_path / "w.safetensors")
    port32 = tp.load_safetensors(tp.MultiHeadAttention(3, 4, 5, 0.0, 2), tmp_path / "w.safetensors")
    assert port32.W_query.weight.dtype == torch.float32
    with pytest.raises(RuntimeError, match="size mismatch"):
        tp.load_safetensors(tp.MultiHeadAttention(3, 4, 6, 0.0, 2), tmp_path / "w.safetensors")
    with pytest.raises(KeyError):
        npio.load_safetensors(npattn.CausalAttention(3, 4, 5, 0.0), tmp_path / "w.safetensors")
