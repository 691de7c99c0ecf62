"""Exercise: the RMSNorm backward (QK-norm in Qwen3 and Gemma 3)."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def rmsnorm_backward(x, scale, dy, eps):
    """Backward of y = x / sqrt(mean(x**2, -1) + eps) * scale.

    Shapes: x (..., E), scale (E,), dy (..., E), eps a float >= 0
    -> dx (..., E), dscale (E,).
    """
    raise NotImplementedError("write the RMSNorm backward")
'''

HINTS = (
    "Recompute rstd = 1 / sqrt(mean(x**2, -1, keepdims=True) + eps) and x_hat = x * rstd; eps "
    "belongs inside the square root.",
    "scale is shared by every row: dscale = sum of dy * x_hat over every axis but the last. "
    "dx_hat = dy * scale.",
    "x reaches x_hat directly and through rstd: dx = rstd * (dx_hat - x_hat * "
    "mean(dx_hat * x_hat, -1)).",
)


def rmsnorm_backward(x, scale, dy, eps):
    rstd = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)  # (..., 1)
    x_hat = x * rstd  # (..., E)
    dscale = (dy * x_hat).reshape(-1, x.shape[-1]).sum(axis=0)  # (E,)
    dx_hat = dy * scale
    dx = rstd * (dx_hat - x_hat * np.mean(dx_hat * x_hat, axis=-1, keepdims=True))
    return dx, dscale


def reference(x, scale, dy, eps):
    _, cache = F.rmsnorm_forward(x, scale, eps)
    return F.rmsnorm_backward(dy, cache)


def make_inputs(p, rng):
    shape = (p["B"], p["T"])[2 - p["lead"] :] + (p["E"],)  # 0 to 2 leading axes
    x = rng.standard_normal(shape) * (1e-3 if p["small"] else 1.0)  # small x: eps matters
    return {
        "x": x,
        "scale": rng.standard_normal(p["E"]),
        "dy": rng.standard_normal(shape),
        "eps": (1e-6, 1e-2)[p["eps"]],
    }


@mistake(
    "eps_missing",
    "eps is left out",
    "The forward used sqrt(mean(x**2) + eps): the backward's rstd must be the same number.",
)
def _eps_missing(x, scale, dy, eps):
    return rmsnorm_backward(x, scale, dy, 0.0)


@mistake(
    "rstd_constant",
    "rstd treated as a constant",
    "Your dx treats rstd as a constant, but rstd depends on x: moving one entry moves the "
    "whole row through mean(x**2). Differentiate through it too; it adds a term with a sum "
    "over the row.",
)
def _rstd_constant(x, scale, dy, eps):
    _, dscale = rmsnorm_backward(x, scale, dy, eps)
    rstd = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return rstd * dy * scale, dscale


@mistake(
    "scale_left_out",
    "dx forgets the scale",
    "y = x_hat * scale, so dx_hat = dy * scale before the normalisation's backward.",
)
def _scale_left_out(x, scale, dy, eps):
    dx, dscale = rmsnorm_backward(x, np.ones_like(scale), dy, eps)
    return dx, dscale


@mistake(
    "layernorm_mean",
    "a LayerNorm backward (the mean subtracted)",
    "RMSNorm does not centre x: there is no mean(dx_hat) term.",
)
def _layernorm_mean(x, scale, dy, eps):
    dx, dscale = rmsnorm_backward(x, scale, dy, eps)
    rstd = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return dx - rstd * np.mean(dy * scale, axis=-1, keepdims=True), dscale


EXERCISE = Exercise(
    name="rmsnorm_backward",
    title="RMSNorm backward",
    part="beyond",
    docs="modern/rmsnorm.md",
    args=("x", "scale", "dy", "eps"),
    outputs=("dx", "dscale"),
    stub=STUB,
    hints=HINTS,
    solution=rmsnorm_backward,
    reference=reference,
    make_inputs=make_inputs,
    params={"lead": (0, 2), "B": (1, 2), "T": (1, 3), "E": (1, 5), "small": (0, 1), "eps": (0, 1)},
    mistakes=(_eps_missing, _rstd_constant, _scale_left_out, _layernorm_mean),
)
