"""torch_port.convert for the modern classes: constructor arguments read back from the
state_dict's shapes and the module's attributes, the book's Qwen3/Llama 3 class, and (where
npattn has the class) npattn <-> torch round trips and safetensors files both ways.

Shapes: x (B, T, d_in)."""

import numpy as np
import pytest
from hypothesis import given
from strategies import modern_configs, modern_constructor_args
from tolerances import F64

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
pytest.importorskip("safetensors", reason="safetensors is not installed (pip install '.[torch]')")

import npattn  # noqa: E402
import torch_port as tp  # noqa: E402
from npattn import io as npio  # noqa: E402

NAMES = tp.convert.MODERN_CLASSES
CONVERT_F64 = dict(rtol=1e-12, atol=1e-12)  # round trips copy arrays: exact up to rounding


def port_module(name, cfg, dropout=0.0):
    torch.manual_seed(cfg["seed"])
    args, kwargs = modern_constructor_args(name, cfg, dropout)
    return getattr(tp, name)(*args, **kwargs, dtype=torch.float64)


def torch_state(module):
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def assert_same_state(a: dict, b: dict):
    """Same keys in the same order, same dtypes, bitwise equal values."""
    assert list(a) == list(b)
    for key in a:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        assert x.dtype == y.dtype and x.shape == y.shape, key
        np.testing.assert_array_equal(x, y, err_msg=key)


def needs_npattn(name):
    if not hasattr(npattn, name):
        pytest.skip(f"npattn has no {name} yet")


@pytest.mark.parametrize("name", NAMES)
@given(cfg=modern_configs())
def test_arguments_read_back_rebuild_the_same_module(name, cfg):
    port = port_module(name, cfg, dropout=0.25)
    sd = port.state_dict()
    args, kwargs = tp.convert.modern_args(name, sd, port)
    assert (args, kwargs) == modern_constructor_args(name, cfg, dropout=0.25)
    rebuilt = getattr(tp, name)(*args, **kwargs, dtype=torch.float64)
    rebuilt.load_state_dict(sd)
    x = torch.randn(cfg["B"], cfg["T"], cfg["d_in"], dtype=torch.float64)
    torch.testing.assert_close(rebuilt.eval()(x), port.eval()(x), rtol=0, atol=0)


def books_qwen3_attention(port):
    """A stand-in for the book's qwen3.py class: named GroupedQueryAttention, no dropout and no
    RoPE attributes (the book keeps cos and sin in the model)."""
    book = type("GroupedQueryAttention", (torch.nn.Module,), {})()
    for child in ("W_query", "W_key", "W_value", "out_proj", "q_norm", "k_norm"):
        setattr(book, child, getattr(port, child))
    book.num_heads, book.num_kv_groups, book.head_dim = port.num_heads, port.num_kv_groups, 4
    return book


def test_the_books_qwen3_attention_converts_with_its_rope_settings():
    port = tp.Qwen3Attention(6, 4, 2, head_dim=4, rope_base=500_000.0, context_length=16)
    book = books_qwen3_attention(port)
    assert tp.convert._class_name(book) == "Qwen3Attention"
    with pytest.raises(TypeError, match="rope_base"):
        tp.convert.modern_args("Qwen3Attention", book.state_dict(), book)
    settings = dict(rope_base=500_000.0, context_length=16)
    args, kwargs = tp.convert.modern_args("Qwen3Attention", book.state_dict(), book, settings)
    assert args == (6, 4, 2, 4, True) and kwargs == settings
    with pytest.raises(TypeError, match="Qwen3Attention only"):
        tp.to_npattn(port_module("GroupedQueryAttention", dict(FIXED)), rope_base=1.0)


def test_unknown_classes_are_refused():
    with pytest.raises(TypeError, match="modern"):
        tp.to_npattn(torch.nn.Linear(2, 2))


FIXED = dict(B=2, T=3, d_in=3, G=1, H=2, E=2, C=2, W=2, bias=True, rope_base=1e4, seed=4)
FIXED["context_length"] = 8


# --- with npattn's side (skipped where npattn lacks the class) -----------------------------


@pytest.mark.parametrize("name", NAMES)
@given(cfg=modern_configs())
def test_round_trips_are_exact_and_compute_the_same(name, cfg):
    needs_npattn(name)
    port = port_module(name, cfg, dropout=0.25).eval()
    ref = tp.to_npattn(port)
    assert type(ref) is getattr(npattn, name) and not ref.training
    assert_same_state(ref.state_dict(), torch_state(port))
    back = tp.from_npattn(ref)
    assert type(back) is getattr(tp, name) and not back.training
    assert_same_state(torch_state(back), torch_state(port))
    x = np.random.default_rng(cfg["seed"]).standard_normal((cfg["B"], cfg["T"], cfg["d_in"]))
    np.testing.assert_allclose(ref(x), port(torch.tensor(x)).detach().numpy(), **F64)


@pytest.mark.parametrize("name", NAMES)
def test_safetensors_files_cross_both_ways(name, tmp_path):
    needs_npattn(name)
    port = port_module(name, FIXED)
    tp.save_safetensors(port, tmp_path / "pt.safetensors")
    ref = tp.to_npattn(port_module(name, dict(FIXED, seed=5)))  # other weights
    assert npio.load_safetensors(ref, tmp_path / "pt.safetensors") is ref
    assert_same_state(ref.state_dict(), torch_state(port))

    npio.save_safetensors(ref, tmp_path / "np.safetensors")
    other = port_module(name, dict(FIXED, seed=6))
    tp.load_safetensors(other, tmp_path / "np.safetensors")
    assert_same_state(torch_state(other), torch_state(port))


def test_torch_safetensors_round_trip_without_npattn(tmp_path):
    for name in NAMES:
        port = port_module(name, FIXED)
        tp.save_safetensors(port, tmp_path / f"{name}.safetensors")
        other = tp.load_safetensors(
            port_module(name, dict(FIXED, seed=9)), tmp_path / f"{name}.safetensors"
        )
        assert_same_state(torch_state(other), torch_state(port))


def test_llama31_frequency_scaling_crosses_and_a_lost_setting_is_caught():
    needs_npattn("Qwen3Attention")
    freq = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_context_length=8)
    port = tp.Qwen3Attention(
        6, 2, 1, head_dim=8, qk_norm=False, rope_base=500_000.0, context_length=16,
        rope_freq_config=freq, dtype=torch.float64,
    )  # fmt: skip
    ref = tp.to_npattn(port)
    x = np.random.default_rng(0).standard_normal((1, 16, 6))
    np.testing.assert_allclose(ref(x), port(torch.tensor(x)).detach().numpy(), **F64)
    port.rope_freq_config = None  # as if the source kept no such attribute
    with pytest.raises(ValueError, match="RoPE cos table"):
        tp.to_npattn(port)
