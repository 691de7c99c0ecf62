"""Linear: torch.nn.Linear's parameters, initialisation and layout, on the linear op."""

from __future__ import annotations

import math

import numpy as np

from .._checks import (
    as_float_array,
    as_grad,
    check_allocation,
    check_bool,
    check_positive_int,
    make_rng,
)
from ..ops.linear import linear_backward, linear_forward
from .base import Module


def uniform_init(rng: np.random.Generator, shape, fan_in: int, dtype=np.float32) -> np.ndarray:
    """torch.nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming, a=sqrt(5))."""
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Linear(Module):
    """out = x @ weight.T + bias.

    Shapes: x (..., in_features) -> (..., out_features); weight (out_features, in_features).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rng=None):
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        check_allocation((out_features, in_features), 4, "in_features, out_features", "a weight")
        rng = make_rng(rng)
        bias = check_bool(bias, "bias")
        self.register_parameter(
            "weight", uniform_init(rng, (out_features, in_features), in_features)
        )
        if bias:
            self.register_parameter("bias", uniform_init(rng, (out_features,), in_features))
        else:
            self.bias = None

    def forward(self, x):
        x = as_float_array(x, "x", dtype=self.weight.dtype)  # compute in the weight's dtype
        out, self._cache = linear_forward(x, self.weight, self.bias)
        return out

    def backward(self, dout):
        dx, dweight, dbias = linear_backward(dout, self._require_cache())
        self._grads = {"weight": dweight}
        if dbias is not None:
            self._grads["bias"] = dbias
        return dx

    def forget_forward(self) -> None:
        """Drop the cache of this layer's last own forward.

        Called when a fused op computed this layer's output instead (the fast paths of
        MultiHeadAttention): this layer's own backward would otherwise use an older input.
        It raises instead, until the layer runs forward again.
        """
        self._drop_cache()

    def set_grads(self, weight, bias=None) -> None:
        """Take this layer's gradients from a fused op instead of from its own backward.

        attn_impl="blocked" or "tiled" computes W_query, W_key and W_value as one matrix
        product, and out_proj on the same op (npattn/fast/fused_linear.py), so no layer runs
        its own forward or backward; each is handed its gradients here, and `grads` reads as
        after backward.
        Shapes: weight (out_features, in_features), bias (out_features,), given iff the layer
        has a bias.
        """
        self._grads = {"weight": as_grad(weight, self.weight.shape, self.dtype, "weight")}
        if (bias is None) != (self.bias is None):
            raise ValueError(f"bias gradient must be given iff the layer has a bias ({self})")
        if bias is not None:
            self._grads["bias"] = as_grad(bias, self.bias.shape, self.dtype, "bias")

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )
