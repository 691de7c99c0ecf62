"""Weight files: an npattn module's state_dict to and from .safetensors (no pickle).

The files use torch's keys and layout, so torch_port.save_safetensors / load_safetensors (or
safetensors.torch) read and write the same files. safetensors is imported only when called:
npattn itself needs numpy alone (pip install safetensors, or the project's [torch] extra).
"""

from __future__ import annotations

import numpy as np


def _safetensors_numpy():
    try:
        from safetensors import numpy as st_numpy
    except ImportError as e:
        raise ImportError("npattn.io needs the safetensors package: pip install safetensors") from e
    return st_numpy


def save_safetensors(module, path, metadata: dict | None = None) -> None:
    """Write module.state_dict() to path. Shapes: every array as in the state_dict.

    safetensors stores contiguous arrays only, so each array is made contiguous first.
    """
    st_numpy = _safetensors_numpy()
    sd = {k: np.ascontiguousarray(v) for k, v in module.state_dict().items()}
    meta = {"class": type(module).__name__, **(metadata or {})}
    st_numpy.save_file(sd, str(path), metadata=meta)


def load_safetensors(module, path):
    """Load path into module (strict about keys and shapes; arrays keep the file's dtype).

    Returns the module, so `m = load_safetensors(npattn.MultiHeadAttention(...), path)` works.
    """
    st_numpy = _safetensors_numpy()
    module.load_state_dict(st_numpy.load_file(str(path)))
    return module
