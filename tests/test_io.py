"""npattn.io: state dicts to and from .safetensors with numpy alone (no torch, no pickle)."""

import subprocess
import sys

import numpy as np
import pytest

import npattn
from npattn import io as npio

pytest.importorskip("safetensors", reason="safetensors is not installed (pip install safetensors)")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_keeps_keys_order_dtypes_and_values(dtype, tmp_path):
    ref = npattn.MultiHeadAttentionWrapper(3, 2, 5, 0.1, 3, qkv_bias=True, rng=0).astype(dtype)
    npio.save_safetensors(ref, tmp_path / "w.safetensors")
    other = npattn.MultiHeadAttentionWrapper(3, 2, 5, 0.1, 3, qkv_bias=True, rng=1).astype(dtype)
    assert npio.load_safetensors(other, tmp_path / "w.safetensors") is other
    assert list(other.state_dict()) == list(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert other.state_dict()[key].dtype == value.dtype, key
        np.testing.assert_array_equal(other.state_dict()[key], value, err_msg=key)


def test_non_contiguous_arrays_are_saved_in_their_logical_order(tmp_path):
    """safetensors writes raw buffers: a Fortran-order array would come back transposed."""
    ref = npattn.SelfAttention_v1(3, 4, rng=0)
    ref.W_query = np.asfortranarray(ref.W_query)  # e.g. a parameter set by hand
    assert not ref.state_dict()["W_query"].flags.c_contiguous
    npio.save_safetensors(ref, tmp_path / "w.safetensors")
    back = npio.load_safetensors(npattn.SelfAttention_v1(3, 4, rng=1), tmp_path / "w.safetensors")
    for key, value in ref.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key], value, err_msg=key)


def test_strict_about_keys_and_shapes(tmp_path):
    npio.save_safetensors(npattn.CausalAttention(3, 4, 5, 0.0, rng=0), tmp_path / "c.safetensors")
    with pytest.raises(KeyError, match="missing"):
        npio.load_safetensors(
            npattn.MultiHeadAttention(3, 4, 5, 0.0, 2), tmp_path / "c.safetensors"
        )
    with pytest.raises(ValueError, match="must have shape"):
        npio.load_safetensors(npattn.CausalAttention(3, 4, 6, 0.0), tmp_path / "c.safetensors")


def test_npattn_io_imports_with_numpy_alone_and_says_what_it_needs():
    code = (
        "import sys; sys.modules['torch'] = sys.modules['safetensors'] = None\n"
        "import npattn, npattn.io\n"
        "try:\n"
        "    npattn.io.save_safetensors(npattn.SelfAttention_v1(2, 2), 'x')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "needs the safetensors package: pip install safetensors" in out.stdout
