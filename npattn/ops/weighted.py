"""weighted_sum(w, v): w @ v in which a weight of exactly 0 contributes nothing.

Attention multiplies its weights by the values: out = attn_weights @ v. A masked key has
weight 0, but in IEEE arithmetic 0 * NaN = NaN and 0 * inf = NaN, so a NaN (or inf) value of
a masked key, a later token in a causal mask, say, would make every earlier row NaN. The rule
here: a masked position contributes nothing, forward and backward; a NaN or inf a row does
attend (weight != 0) still reaches that row, as IEEE arithmetic would carry it.

Shapes: w (..., L, S), v (..., S, N) -> (..., L, N), as np.matmul (batch dims broadcast).

Forward:
    1. out = w @ v                       (..., L, N); done when finite (the common case)
    2. with non-finite values: out = w @ v0, v0 = v with its non-finite entries set to 0
    3. each non-finite entry v[s, n] a row attends (w[l, s] != 0) sets out[l, n] to what
       w[l, s] * v[s, n] would add: NaN, or inf of the product's sign (NaN where +inf and
       -inf meet)
"""

from __future__ import annotations

import numpy as np

__all__ = ["weighted_sum", "zero_where_unweighted"]


def weighted_sum(w: np.ndarray, v: np.ndarray, out=None) -> np.ndarray:
    """w @ v, a zero weight contributing nothing even against a NaN or inf value.

    Shapes: w (..., L, S), v (..., S, N) -> (..., L, N); out, when given, receives it.
    """
    # 1. the plain product: finite means no 0 * NaN happened
    res = np.matmul(w, v, out=out)
    if np.isfinite(res).all():
        return res
    finite_v = np.isfinite(v)
    if finite_v.all():
        return res  # a non-finite weight, or an overflow: as computed
    # 2. the product over the finite values
    dtype = res.dtype
    np.matmul(w, np.where(finite_v, v, 0).astype(dtype, copy=False), out=res)
    # 3. the non-finite values each row attends, by the sign of their products
    pos_w, neg_w = (w > 0).astype(dtype), (w < 0).astype(dtype)  # (..., L, S); NaN: neither
    nan_v = np.isnan(v).astype(dtype)  # (..., S, N)
    up, down = (v == np.inf).astype(dtype), (v == -np.inf).astype(dtype)
    hits_nan = (pos_w + neg_w) @ nan_v > 0  # (..., L, N)
    hits_up = (pos_w @ up + neg_w @ down) > 0  # a product of +inf
    hits_down = (pos_w @ down + neg_w @ up) > 0  # a product of -inf
    res[hits_up] = np.inf
    res[hits_down] = -np.inf
    res[hits_nan | (hits_up & hits_down)] = np.nan
    return res


def zero_where_unweighted(g: np.ndarray, w: np.ndarray) -> np.ndarray:
    """g with 0 wherever w is 0, when g is not finite (else g itself).

    The backward's gradient of a weight, dout @ v^T, is NaN for a masked key with a NaN value;
    the weight's own gradient dS = w * (g - sum(g * w)) takes it times 0. This zeroes it first,
    so a masked position contributes nothing backward either.

    Shapes: g (..., L, S), w broadcastable to it -> (..., L, S).
    """
    if np.isfinite(g).all():
        return g
    return np.where(w != 0, g, 0).astype(g.dtype, copy=False)
