"""RMSNorm, the module around ops/rmsnorm.py: parameter `scale` (ones at init), as the book's;
with an offset (Gemma's x_hat * (1 + scale)), scale starts at zeros."""

from __future__ import annotations

import numpy as np

from .._checks import as_float_array, check_positive_int, check_real
from ..ops.rmsnorm import DEFAULT_EPS, rmsnorm_backward, rmsnorm_forward
from .base import Module


class RMSNorm(Module):
    """out = x * (offset + scale) / sqrt(mean(x**2) + eps) over the last axis.

    Shapes: x (..., emb_dim) -> (..., emb_dim); scale (emb_dim,), ones at init when offset is
    0, zeros otherwise (Gemma: offset 1, so the gain starts at 1 either way).
    """

    def __init__(
        self, emb_dim: int, eps: float = DEFAULT_EPS, *, offset: float = 0.0, dtype=np.float32
    ):
        super().__init__()
        self.emb_dim = check_positive_int(emb_dim, "emb_dim")
        self.eps = check_real(eps, "eps", "a float >= 0")
        self.offset = check_real(offset, "offset", "a finite float")
        if not np.isfinite(self.offset):
            raise ValueError(f"offset must be finite, got {offset}")
        init = np.ones if self.offset == 0 else np.zeros
        self.register_parameter("scale", init(self.emb_dim, dtype=dtype))

    def forward(self, x):
        x = as_float_array(x, "x", dtype=self.scale.dtype)  # compute in the parameter's dtype
        out, self._cache = rmsnorm_forward(x, self.scale, self.eps, self.offset)
        return out

    def backward(self, dout):
        dx, dscale = rmsnorm_backward(dout, self._require_cache())
        self._grads = {"scale": dscale}
        return dx

    def extra_repr(self) -> str:
        offset = f", offset={self.offset}" if self.offset else ""
        return f"emb_dim={self.emb_dim}, eps={self.eps}{offset}"
