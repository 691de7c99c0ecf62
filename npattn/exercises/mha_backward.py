"""Exercise: multi-head attention's backward, put together from the pieces."""

import numpy as np

from .. import functional as F
from ._core import Exercise, mistake

STUB = '''
import numpy as np


def mha_backward(x, W_query, W_key, W_value, W_out, num_heads, dout):
    """Backward of the chapter's MultiHeadAttention (no biases, no dropout): project x to
    queries, keys and values (torch layout, x @ W.T), split into heads, causal attention with
    scale 1 / sqrt(E), merge the heads, and project with W_out.

    Shapes: x (B, T, d_in); W_query, W_key, W_value (d_out, d_in); W_out (d_out, d_out);
    num_heads H (E = d_out // H); dout (B, T, d_out)
    -> dx (B, T, d_in), dW_query, dW_key, dW_value (d_out, d_in), dW_out (d_out, d_out).
    """
    raise NotImplementedError("write the multi-head attention backward")
'''

HINTS = (
    "Number the forward's steps (1. projections, 2. split heads, 3. causal attention, "
    "4. merge heads, 5. out projection) and walk them backwards, reusing the backward of "
    "each piece.",
    "Splitting and merging heads are a reshape and a transpose: each one's backward is the "
    "other. The causal attention backward needs the same mask as its forward.",
    "x feeds the queries, the keys and the values: dx is the sum of three terms, "
    "dq @ W_query + dk @ W_key + dv @ W_value.",
)


def mha_backward(x, W_query, W_key, W_value, W_out, num_heads, dout):
    B, T, _ = x.shape
    d_out = W_query.shape[0]
    H, E = num_heads, d_out // num_heads

    def split(a):  # (B, T, d_out) -> (B, H, T, E)
        return a.reshape(B, T, H, E).transpose(0, 2, 1, 3)

    def merge(a):  # (B, H, T, E) -> (B, T, d_out)
        return a.transpose(0, 2, 1, 3).reshape(B, T, d_out)

    # forward: 1. projections, 2. split, 3. causal attention, 4. merge, 5. out projection
    q, k, v = (split(x @ W.T) for W in (W_query, W_key, W_value))  # (B, H, T, E)
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(E)  # (B, H, T, T)
    scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)
    P = np.exp(scores - scores.max(axis=-1, keepdims=True))
    P /= P.sum(axis=-1, keepdims=True)
    context = merge(P @ v)  # (B, T, d_out)
    # 5. out = context @ W_out.T
    dW_out = dout.reshape(-1, d_out).T @ context.reshape(-1, d_out)
    dcontext = split(dout @ W_out)  # 4. merge's backward is a split
    # 3. attention
    dv = P.swapaxes(-1, -2) @ dcontext
    dP = dcontext @ v.swapaxes(-1, -2)
    dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True)) / np.sqrt(E)
    dq, dk = dS @ k, dS.swapaxes(-1, -2) @ q
    # 2. split's backward is a merge; 1. x feeds all three projections
    dq, dk, dv = merge(dq), merge(dk), merge(dv)  # (B, T, d_out)
    x2 = x.reshape(-1, x.shape[-1])
    dWs = [d.reshape(-1, d_out).T @ x2 for d in (dq, dk, dv)]
    dx = dq @ W_query + dk @ W_key + dv @ W_value
    return dx, *dWs, dW_out


def reference(x, W_query, W_key, W_value, W_out, num_heads, dout):
    projections = [F.linear_forward(x, W) for W in (W_query, W_key, W_value)]
    splits = [F.split_heads_forward(out, num_heads) for out, _ in projections]
    context, sdpa_cache = F.sdpa_forward(*(h for h, _ in splits), is_causal=True)
    merged, merge_cache = F.merge_heads_forward(context)
    _, out_cache = F.linear_forward(merged, W_out)
    # 5. -> 1.
    dmerged, dW_out, _ = F.linear_backward(dout, out_cache)
    dheads = F.sdpa_backward(F.merge_heads_backward(dmerged, merge_cache), sdpa_cache)
    dx = np.zeros_like(x)
    dWs = []
    for d, (_, s_cache), (_, l_cache) in zip(dheads, splits, projections):
        dx_part, dW, _ = F.linear_backward(F.split_heads_backward(d, s_cache), l_cache)
        dx += dx_part  # x feeds q, k and v
        dWs.append(dW)
    return (dx, *dWs, dW_out)


def make_inputs(p, rng):
    H = p["H"]
    d_in, d_out = p["d_in"], H * p["E"]
    W = [rng.standard_normal((d_out, d_in)) / np.sqrt(d_in) for _ in range(3)]
    return {
        "x": rng.standard_normal((p["B"], p["T"], d_in)),
        "W_query": W[0],
        "W_key": W[1],
        "W_value": W[2],
        "W_out": rng.standard_normal((d_out, d_out)) / np.sqrt(d_out),
        "num_heads": H,
        "dout": rng.standard_normal((p["B"], p["T"], d_out)),
    }


def _wrong(x, W_query, W_key, W_value, W_out, num_heads, dout, **flaws):
    """mha_backward with one flaw switched on."""
    B, T, _ = x.shape
    d_out = W_query.shape[0]
    H, E = num_heads, d_out // num_heads

    def split(a):
        if flaws.get("reshape_only"):
            return a.reshape(B, H, T, E)
        return a.reshape(B, T, H, E).transpose(0, 2, 1, 3)

    def merge(a):
        if flaws.get("reshape_only"):
            return a.reshape(B, T, d_out)
        return a.transpose(0, 2, 1, 3).reshape(B, T, d_out)

    q, k, v = (split(x @ W.T) for W in (W_query, W_key, W_value))
    mask = None if flaws.get("no_mask") else F.causal_mask(T)
    out, cache = F.sdpa_forward(q, k, v, mask)
    context = merge(out)
    dW_out = dout.reshape(-1, d_out).T @ context.reshape(-1, d_out)
    if flaws.get("dW_out_transposed"):
        dW_out = dW_out.T
    dq, dk, dv = (merge(d) for d in F.sdpa_backward(split(dout @ W_out), cache))
    x2 = x.reshape(-1, x.shape[-1])
    dWs = [d.reshape(-1, d_out).T @ x2 for d in (dq, dk, dv)]
    dx = dq @ W_query
    if not flaws.get("dx_queries_only"):
        dx = dx + dk @ W_key + dv @ W_value
    return dx, *dWs, dW_out


@mistake(
    "dx_queries_only",
    "dx takes only the queries' path",
    "x feeds the queries, the keys and the values: add all three terms.",
)
def _dx_queries_only(*args):
    return _wrong(*args, dx_queries_only=True)


@mistake(
    "mask_forgotten",
    "the causal mask is missing",
    "The forward masked the future: recompute the same masked weights in the backward.",
)
def _mask_forgotten(*args):
    return _wrong(*args, no_mask=True)


@mistake(
    "heads_reshape_only",
    "heads split and merged by reshapes alone",
    "(B, T, d_out) -> (B, H, T, E) is a reshape to (B, T, H, E) then a transpose of T and H; "
    "a plain reshape mixes tokens and heads.",
)
def _heads_reshape_only(*args):
    return _wrong(*args, reshape_only=True)


@mistake(
    "dW_out_transposed",
    "dW_out in the (d_in, d_out) layout",
    "torch's weight is (d_out, d_in): its gradient is dout^T @ context, not context^T @ dout.",
)
def _dW_out_transposed(*args):
    return _wrong(*args, dW_out_transposed=True)


EXERCISE = Exercise(
    name="mha_backward",
    title="Multi-head attention backward, from its parts",
    part="backward",
    docs="backward/index.md",
    args=("x", "W_query", "W_key", "W_value", "W_out", "num_heads", "dout"),
    outputs=("dx", "dW_query", "dW_key", "dW_value", "dW_out"),
    stub=STUB,
    hints=HINTS,
    solution=mha_backward,
    reference=reference,
    make_inputs=make_inputs,
    params={"B": (1, 2), "T": (1, 4), "d_in": (1, 3), "H": (1, 3), "E": (1, 2)},
    mistakes=(_dx_queries_only, _mask_forgotten, _heads_reshape_only, _dW_out_transposed),
)
