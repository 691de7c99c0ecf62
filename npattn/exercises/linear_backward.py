"""Exercise: the linear layer's backward, in torch's layout (weight is (d_out, d_in))."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def linear_backward(x, weight, dout):
    """Gradients of out = x @ weight.T + bias (torch's Linear layout).

    Shapes: x (..., d_in), weight (d_out, d_in), dout (..., d_out)
    -> dx (..., d_in), dweight (d_out, d_in), dbias (d_out,).
    """
    raise NotImplementedError("write the linear backward")
'''

HINTS = (
    "Each gradient has the shape of its variable: let the shapes choose the products.",
    "dx = dout @ weight: (..., d_out) @ (d_out, d_in). dweight sums dout_n^T x_n over every "
    "row n of every leading axis: flatten the leading axes first.",
    "dbias adds up dout over every leading axis (the bias is added to every row).",
)


def linear_backward(x, weight, dout):
    x2 = x.reshape(-1, x.shape[-1])  # (N, d_in), N = every leading axis
    d2 = dout.reshape(-1, dout.shape[-1])  # (N, d_out)
    dx = dout @ weight  # (..., d_out) @ (d_out, d_in) -> (..., d_in)
    dweight = d2.T @ x2  # (d_out, N) @ (N, d_in) -> (d_out, d_in)
    dbias = d2.sum(axis=0)  # (d_out,)
    return dx, dweight, dbias


def reference(x, weight, dout):
    _, cache = F.linear_forward(x, weight, np.zeros(weight.shape[0]))
    return F.linear_backward(dout, cache)


def make_inputs(p, rng):
    lead = (p["B"], p["T"])[: p["lead"]]
    d_in, d_out = p["d_in"], p["d_out"]
    return {
        "x": rng.standard_normal(lead + (d_in,)),
        "weight": rng.standard_normal((d_out, d_in)),
        "dout": rng.standard_normal(lead + (d_out,)),
    }


@mistake(
    "dweight_transposed",
    "dweight in the (d_in, d_out) layout",
    "torch's weight is (d_out, d_in), and its gradient has its shape: dout^T @ x, not x^T @ dout.",
)
def _dweight_transposed(x, weight, dout):
    dx, dweight, dbias = linear_backward(x, weight, dout)
    return dx, dweight.T, dbias


@mistake(
    "dbias_mean",
    "dbias averaged over the rows",
    "The bias is added to every row, so "
    "its gradient is the sum of dout over the rows, not the mean.",
)
def _dbias_mean(x, weight, dout):
    dx, dweight, dbias = linear_backward(x, weight, dout)
    return dx, dweight, dout.reshape(-1, dout.shape[-1]).mean(axis=0)


@mistake(
    "dweight_mean",
    "dweight averaged over the rows",
    "The weight is used by every row: its gradient sums the rows' contributions.",
)
def _dweight_mean(x, weight, dout):
    dx, dweight, dbias = linear_backward(x, weight, dout)
    return dx, dweight / max(1, x.size // x.shape[-1]), dbias


@mistake(
    "dbias_last_axis",
    "dbias summed over d_out",
    "dbias has one entry per output feature (d_out,): sum over the leading axes, keep the last.",
)
def _dbias_last_axis(x, weight, dout):
    dx, dweight, _ = linear_backward(x, weight, dout)
    return dx, dweight, dout.sum(axis=-1)


EXERCISE = Exercise(
    name="linear_backward",
    title="Linear backward",
    part="backward",
    docs="backward/linear.md",
    args=("x", "weight", "dout"),
    outputs=("dx", "dweight", "dbias"),
    stub=STUB,
    hints=HINTS,
    solution=linear_backward,
    reference=reference,
    make_inputs=make_inputs,
    params={"lead": (1, 2), "B": (1, 3), "T": (1, 3), "d_in": (1, 4), "d_out": (1, 4)},
    mistakes=(_dweight_transposed, _dbias_mean, _dweight_mean, _dbias_last_axis),
)
