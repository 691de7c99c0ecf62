"""Weight files: an npattn module's state_dict to and from .safetensors (no pickle).

The files use torch's keys and layout, so torch_port.save_safetensors / load_safetensors (or
safetensors.torch) read and write the same files. safetensors is imported only when called:
npattn itself needs numpy alone (pip install safetensors, or the project's [torch] extra).

A file that cannot be read (corrupt, truncated, a header too large, a pickle renamed
.safetensors, a dtype numpy lacks) raises WeightFileError, a ValueError naming the file, with
the library's own error kept as its cause. bfloat16 entries, which numpy lacks, are read as
float32 (every bfloat16 value is exactly a float32) and then cast, like every entry, to the
dtype the module already has (Module.load_state_dict).
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

HEADER_BYTES = 8  # a safetensors file starts with the header's length, a little-endian u64


class WeightFileError(ValueError):
    """A weight file that cannot be read or written, named, with the library's error as cause."""


def _safetensors():
    try:
        import safetensors
        from safetensors import numpy as st_numpy
    except ImportError as e:
        raise ImportError("npattn.io needs the safetensors package: pip install safetensors") from e
    return safetensors, st_numpy


def check_path(path, must_exist: bool) -> str:
    """path as a str: a str or os.PathLike naming a file (not a directory)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fsdecode(os.fspath(path))
    if os.path.isdir(path):
        raise WeightFileError(f"path {path!r} is a directory, not a .safetensors file")
    if must_exist and not os.path.exists(path):
        raise FileNotFoundError(f"path {path!r}: no such weight file")
    return path


def _bfloat16_as_float32(path: str, key: str) -> np.ndarray:
    """Entry `key` of a (valid) safetensors file, stored as BF16, as a float32 array."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(HEADER_BYTES))
        entry = json.loads(f.read(n))[key]
        begin, end = entry["data_offsets"]
        f.seek(HEADER_BYTES + n + begin)
        raw = np.frombuffer(f.read(end - begin), dtype="<u2")
    # a bfloat16 is the top 16 bits of the float32 with the same value
    return (raw.astype("<u4") << 16).view("<f4").reshape(entry["shape"])


def read_safetensors(path) -> dict:
    """Every entry of a .safetensors file as a numpy array (BF16 as float32)."""
    path = check_path(path, must_exist=True)
    safetensors, _ = _safetensors()
    try:
        with safetensors.safe_open(path, framework="numpy") as f:
            return {
                key: _bfloat16_as_float32(path, key)
                if f.get_slice(key).get_dtype() == "BF16"
                else f.get_tensor(key)
                for key in f.keys()
            }
    except Exception as e:  # SafetensorError, OSError, a dtype numpy lacks: all name the file
        raise WeightFileError(f"cannot read {path!r} as a safetensors file: {e}") from e


def save_safetensors(module, path, metadata: dict | None = None) -> None:
    """Write module.state_dict() to path. Shapes: every array as in the state_dict.

    safetensors stores contiguous arrays only, so each array is made contiguous first.
    """
    from .modules import Module

    if not isinstance(module, Module):
        raise TypeError(f"module must be an npattn module, got {type(module).__name__}")
    path = check_path(path, must_exist=False)
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of str to str, got {type(metadata).__name__}")
    _, st_numpy = _safetensors()
    sd = {k: np.ascontiguousarray(v) for k, v in module.state_dict().items()}
    meta = {"class": type(module).__name__, **(metadata or {})}
    try:
        st_numpy.save_file(sd, path, metadata=meta)
    except Exception as e:  # an unwritable path, metadata that is not str -> str
        raise WeightFileError(f"cannot write {path!r} as a safetensors file: {e}") from e


def load_safetensors(module, path):
    """Load path into module (strict about keys and shapes; values take the module's dtype,
    as with torch's load_state_dict: make the module float64 first to keep float64 values).

    Returns the module, so `m = load_safetensors(npattn.MultiHeadAttention(...), path)` works.
    """
    from .modules import Module

    if not isinstance(module, Module):
        raise TypeError(f"module must be an npattn module, got {type(module).__name__}")
    module.load_state_dict(read_safetensors(path))
    return module
