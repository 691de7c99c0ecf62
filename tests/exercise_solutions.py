"""Two more correct answers to every exercise, each in a different style from the reference
solution (loops, einsum, explicit Jacobians), as students might write them: the checker must
pass them all. ALTERNATIVES[name] is the pair."""

import numpy as np


def _softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isneginf(m), 0.0, m)
    e = np.exp(x - m)
    s = e.sum(axis=axis, keepdims=True)
    return e / np.where(s == 0, 1.0, s)


# chapter 3


def simple_attention_loops(inputs):
    T = inputs.shape[0]
    out = np.zeros_like(inputs)
    for i in range(T):
        scores = np.array([inputs[i] @ inputs[j] for j in range(T)])
        w = np.exp(scores - scores.max())
        w /= w.sum()
        for j in range(T):
            out[i] += w[j] * inputs[j]
    return out


def simple_attention_einsum(inputs):
    return np.einsum("ij,jd->id", _softmax(np.einsum("id,jd->ij", inputs, inputs)), inputs)


def self_attention_einsum(x, W_query, W_key, W_value):
    q, k, v = (np.einsum("ti,oi->to", x, W) for W in (W_query, W_key, W_value))
    w = _softmax(np.einsum("te,se->ts", q, k) / np.sqrt(k.shape[-1]))
    return np.einsum("ts,se->te", w, v)


def self_attention_rows(x, W_query, W_key, W_value):
    keys, values = x @ W_key.T, x @ W_value.T
    rows = []
    for x_i in x:
        s = keys @ (W_query @ x_i) / np.sqrt(keys.shape[-1])
        rows.append(_softmax(s) @ values)
    return np.stack(rows)


def causal_attention_weights_tril(attn_scores):
    T = attn_scores.shape[-1]
    masked = np.where(np.tril(np.ones((T, T))) == 1, attn_scores, -np.inf)
    return _softmax(masked)


def causal_attention_weights_loops(attn_scores):
    out = np.zeros_like(attn_scores)
    for idx in np.ndindex(attn_scores.shape[:-1]):
        i = idx[-1]
        row = attn_scores[idx][: i + 1]
        e = np.exp(row - row.max())
        out[idx][: i + 1] = e / e.sum()
    return out


# backward passes


def softmax_backward_jacobian(y, dy):
    dx = np.empty_like(y)
    for idx in np.ndindex(y.shape[:-1]):
        J = np.diag(y[idx]) - np.outer(y[idx], y[idx])  # dy_i / dx_j
        dx[idx] = J.T @ dy[idx]
    return dx


def softmax_backward_einsum(y, dy):
    return y * dy - y * np.einsum("...i,...i->...", y, dy)[..., None]


def linear_backward_einsum(x, weight, dout):
    dx = np.einsum("...o,oi->...i", dout, weight)
    dweight = np.einsum("no,ni->oi", dout.reshape(-1, dout.shape[-1]), x.reshape(-1, x.shape[-1]))
    dbias = dout.reshape(-1, dout.shape[-1]).sum(0)
    return dx, dweight, dbias


def linear_backward_loops(x, weight, dout):
    x2, d2 = x.reshape(-1, x.shape[-1]), dout.reshape(-1, dout.shape[-1])
    dweight = np.zeros_like(weight)
    dbias = np.zeros(weight.shape[0])
    for xn, dn in zip(x2, d2):
        dweight += np.outer(dn, xn)
        dbias += dn
    return (d2 @ weight).reshape(x.shape), dweight, dbias


def mask_renormalize_backward_jacobian(attn_weights, mask, dout):
    mask = np.broadcast_to(mask, attn_weights.shape)
    dx = np.zeros_like(attn_weights)
    for idx in np.ndindex(attn_weights.shape[:-1]):
        a, m, g = attn_weights[idx], mask[idx], dout[idx]
        r = (a * m).sum()
        if r == 0:
            continue
        out = a * m / r
        J = (np.eye(a.size) / r - np.outer(out, np.ones(a.size)) / r) * m  # d out_i / d a_j
        dx[idx] = J.T @ g
    return dx


def mask_renormalize_backward_einsum(attn_weights, mask, dout):
    masked = np.where(mask, attn_weights, 0.0)
    r = masked.sum(-1, keepdims=True)
    r[r == 0] = 1.0
    dot = np.einsum("...s,...s->...", dout, masked / r)[..., None]
    return np.where(mask, (dout - dot) / r, 0.0)


def dropout_backward_where(dout, keep, p):
    return np.where(keep, dout / (1 - p), 0.0)


def dropout_backward_loops(dout, keep, p):
    dx = np.zeros_like(dout)
    for idx in np.ndindex(dout.shape):
        if keep[idx]:
            dx[idx] = dout[idx] * (1 / (1 - p))
    return dx


def split_heads_backward_loops(dout):
    B, H, T, E = dout.shape
    dx = np.empty((B, T, H * E))
    for h in range(H):
        dx[:, :, h * E : (h + 1) * E] = dout[:, h]
    return dx


def split_heads_backward_einsum(dout):
    B, H, T, E = dout.shape
    return np.einsum("bhte->bthe", dout).reshape(B, T, H * E)


def sdpa_backward_einsum(q, k, v, dout):
    scale = 1 / np.sqrt(q.shape[-1])
    P = _softmax(np.einsum("...le,...se->...ls", q, k) * scale)
    dv = np.einsum("...ls,...lv->...sv", P, dout)
    dP = np.einsum("...lv,...sv->...ls", dout, v)
    dS = P * (dP - np.einsum("...ls,...ls->...l", dP, P)[..., None])
    dq = np.einsum("...ls,...se->...le", dS, k) * scale
    dk = np.einsum("...ls,...le->...se", dS, q) * scale
    return dq, dk, dv


def sdpa_backward_rows(q, k, v, dout):
    """One query row at a time, with the explicit softmax Jacobian."""
    scale = 1 / np.sqrt(q.shape[-1])
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for idx in np.ndindex(q.shape[:-2]):
        for i in range(q.shape[-2]):
            p = _softmax(k[idx] @ q[idx][i] * scale)  # (S,)
            dv[idx] += np.outer(p, dout[idx][i])
            dp = v[idx] @ dout[idx][i]  # (S,)
            ds = (np.diag(p) - np.outer(p, p)) @ dp
            dq[idx][i] = ds @ k[idx] * scale
            dk[idx] += np.outer(ds, q[idx][i]) * scale
    return dq, dk, dv


def masked_sdpa_backward_einsum(q, k, v, mask, dout):
    scale = 1 / np.sqrt(q.shape[-1])
    P = _softmax(np.where(mask, np.einsum("...le,...se->...ls", q, k) * scale, -np.inf))
    dP = np.einsum("...lv,...sv->...ls", dout, v)
    dS = P * (dP - (dP * P).sum(-1, keepdims=True))
    return (
        np.einsum("...ls,...se->...le", dS, k) * scale,
        np.einsum("...ls,...le->...se", dS, q) * scale,
        np.einsum("...ls,...lv->...sv", P, dout),
    )


def masked_sdpa_backward_rows(q, k, v, mask, dout):
    scale = 1 / np.sqrt(q.shape[-1])
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for idx in np.ndindex(q.shape[:-2]):
        for i in range(q.shape[-2]):
            seen = np.flatnonzero(mask[i])
            if seen.size == 0:
                continue  # weights 0: no gradient
            kk, vv = k[idx][seen], v[idx][seen]
            p = _softmax(kk @ q[idx][i] * scale)
            dv[idx][seen] += np.outer(p, dout[idx][i])
            ds = p * (vv @ dout[idx][i] - p @ (vv @ dout[idx][i]))
            dq[idx][i] = ds @ kk * scale
            dk[idx][seen] += np.outer(ds, q[idx][i]) * scale
    return dq, dk, dv


def mha_backward_per_head(x, W_query, W_key, W_value, W_out, num_heads, dout):
    """Head by head, each with its own row block of the weights (the wrapper's view)."""
    T = x.shape[1]
    E = W_query.shape[0] // num_heads
    causal = np.tril(np.ones((T, T), dtype=bool))
    dx = np.zeros_like(x)
    dWq, dWk, dWv = np.zeros_like(W_query), np.zeros_like(W_key), np.zeros_like(W_value)
    contexts = []
    dcontext = dout @ W_out  # (B, T, d_out)
    for h in range(num_heads):
        rows = slice(h * E, (h + 1) * E)
        Wq, Wk, Wv = W_query[rows], W_key[rows], W_value[rows]
        q, k, v = x @ Wq.T, x @ Wk.T, x @ Wv.T  # (B, T, E)
        P = _softmax(np.where(causal, q @ k.swapaxes(1, 2) / np.sqrt(E), -np.inf))
        contexts.append(P @ v)
        dc = dcontext[..., rows]
        dv = P.swapaxes(1, 2) @ dc
        dP = dc @ v.swapaxes(1, 2)
        dS = P * (dP - (dP * P).sum(-1, keepdims=True)) / np.sqrt(E)
        dq, dk = dS @ k, dS.swapaxes(1, 2) @ q
        dx += dq @ Wq + dk @ Wk + dv @ Wv
        dWq[rows] = np.einsum("bte,bti->ei", dq, x)
        dWk[rows] = np.einsum("bte,bti->ei", dk, x)
        dWv[rows] = np.einsum("bte,bti->ei", dv, x)
    context = np.concatenate(contexts, axis=-1)  # (B, T, d_out)
    dW_out = np.einsum("bto,bti->oi", dout, context)
    return dx, dWq, dWk, dWv, dW_out


def mha_backward_einsum(x, W_query, W_key, W_value, W_out, num_heads, dout):
    B, T, _ = x.shape
    H, E = num_heads, W_query.shape[0] // num_heads
    Wq, Wk, Wv = (W.reshape(H, E, -1) for W in (W_query, W_key, W_value))  # (H, E, d_in)
    q, k, v = (np.einsum("bti,hei->bhte", x, W) for W in (Wq, Wk, Wv))
    S = np.einsum("bhte,bhse->bhts", q, k) / np.sqrt(E)
    P = _softmax(np.where(np.tri(T, dtype=bool), S, -np.inf))
    ctx = np.einsum("bhts,bhse->bhte", P, v)
    Wo = W_out.reshape(-1, H, E)  # (d_out, H, E): out_proj's columns by head
    dW_out = np.einsum("bto,bhte->ohe", dout, ctx).reshape(W_out.shape)
    dctx = np.einsum("bto,ohe->bhte", dout, Wo)
    dv = np.einsum("bhts,bhte->bhse", P, dctx)
    dP = np.einsum("bhte,bhse->bhts", dctx, v)
    dS = P * (dP - np.einsum("bhts,bhts->bht", dP, P)[..., None]) / np.sqrt(E)
    dq = np.einsum("bhts,bhse->bhte", dS, k)
    dk = np.einsum("bhts,bhte->bhse", dS, q)
    dx = sum(np.einsum("bhte,hei->bti", d, W) for d, W in ((dq, Wq), (dk, Wk), (dv, Wv)))
    dWs = [np.einsum("bhte,bti->hei", d, x).reshape(-1, x.shape[-1]) for d in (dq, dk, dv)]
    return dx, *dWs, dW_out


def online_softmax_attention_rows(q, k, v, block_size):
    """Row by row, with a scalar running max and sum."""
    scale = 1 / np.sqrt(q.shape[-1])
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for idx in np.ndindex(q.shape[:-2]):
        for i in range(q.shape[-2]):
            m, l, acc = -np.inf, 0.0, np.zeros(v.shape[-1])
            for j in range(0, k.shape[-2], block_size):
                s = k[idx][j : j + block_size] @ q[idx][i] * scale
                m_new = max(m, s.max())
                p = np.exp(s - m_new)
                c = np.exp(m - m_new)
                l, acc, m = c * l + p.sum(), c * acc + p @ v[idx][j : j + block_size], m_new
            out[idx][i] = acc / l
    return out


def online_softmax_attention_lse(q, k, v, block_size):
    """A running log-sum-exp instead of (m, l); acc kept normalised."""
    scale = 1 / np.sqrt(q.shape[-1])
    lse = np.full(q.shape[:-1] + (1,), -np.inf)
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for j in range(0, k.shape[-2], block_size):
        s = np.einsum("...le,...se->...ls", q, k[..., j : j + block_size, :]) * scale
        m = s.max(-1, keepdims=True)
        block_lse = m + np.log(np.exp(s - m).sum(-1, keepdims=True))
        new = np.logaddexp(lse, block_lse)
        block_out = np.exp(s - block_lse) @ v[..., j : j + block_size, :]
        out = np.exp(lse - new) * out + np.exp(block_lse - new) * block_out
        lse = new
    return out


def tiled_sdpa_backward_einsum(q, k, v, out, lse, dout, block_size):
    scale = 1 / np.sqrt(q.shape[-1])
    D = np.einsum("...lv,...lv->...l", dout, out)[..., None]
    dq = np.zeros_like(q)
    dks, dvs = [], []
    for j in range(0, k.shape[-2], block_size):
        kj, vj = k[..., j : j + block_size, :], v[..., j : j + block_size, :]
        P = np.exp(np.einsum("...le,...se->...ls", q, kj) * scale - lse)
        dS = P * (np.einsum("...lv,...sv->...ls", dout, vj) - D)
        dq += np.einsum("...ls,...se->...le", dS, kj) * scale
        dks.append(np.einsum("...ls,...le->...se", dS, q) * scale)
        dvs.append(np.einsum("...ls,...lv->...sv", P, dout))
    return dq, np.concatenate(dks, -2), np.concatenate(dvs, -2)


def tiled_sdpa_backward_query_blocks(q, k, v, out, lse, dout, block_size):
    """Tiles in both directions: query blocks outside, key blocks inside."""
    scale = 1 / np.sqrt(q.shape[-1])
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    L, S = q.shape[-2], k.shape[-2]
    for i in range(0, L, block_size):
        r = slice(i, i + block_size)
        D = (dout[..., r, :] * out[..., r, :]).sum(-1, keepdims=True)
        for j in range(0, S, block_size):
            c = slice(j, j + block_size)
            P = np.exp(q[..., r, :] @ np.swapaxes(k[..., c, :], -1, -2) * scale - lse[..., r, :])
            dv[..., c, :] += np.swapaxes(P, -1, -2) @ dout[..., r, :]
            dS = P * (dout[..., r, :] @ np.swapaxes(v[..., c, :], -1, -2) - D)
            dq[..., r, :] += dS @ k[..., c, :] * scale
            dk[..., c, :] += np.swapaxes(dS, -1, -2) @ q[..., r, :] * scale
    return dq, dk, dv


# beyond chapter 3


def rope_backward_pairs(dy, cos, sin):
    """Each pair (i, i + E/2) turned by -theta with a 2 x 2 rotation matrix."""
    E = dy.shape[-1]
    h = E // 2
    dx = np.empty_like(dy)
    for i in range(h):
        c, s = cos[:, i], sin[:, i]
        a, b = dy[..., i], dy[..., i + h]
        # forward: y_i = a c - b s, y_{i+h} = b c + a s; transpose of [[c, -s], [s, c]]
        dx[..., i] = a * c + b * s
        dx[..., i + h] = -a * s + b * c
    return dx


def rope_backward_complex(dy, cos, sin):
    """The split halves as one complex number per pair, multiplied by exp(-i theta)."""
    h = dy.shape[-1] // 2
    z = (dy[..., :h] + 1j * dy[..., h:]) * (cos[:, :h] - 1j * sin[:, :h])
    return np.concatenate([z.real, z.imag], axis=-1)


def rmsnorm_backward_jacobian(x, scale, dy, eps):
    E = x.shape[-1]
    dx = np.empty_like(x)
    dscale = np.zeros(E)
    for idx in np.ndindex(x.shape[:-1]):
        xi = x[idx]
        r = 1 / np.sqrt(xi @ xi / E + eps)
        J = (np.eye(E) * r - np.outer(xi, xi) * r**3 / E) * scale[:, None]  # d y_i / d x_j
        dx[idx] = J.T @ dy[idx]
        dscale += dy[idx] * xi * r
    return dx, dscale


def rmsnorm_backward_einsum(x, scale, dy, eps):
    E = x.shape[-1]
    ms = np.einsum("...e,...e->...", x, x)[..., None] / E
    rstd = (ms + eps) ** -0.5
    g = dy * scale
    dx = g * rstd - x * rstd**3 * np.einsum("...e,...e->...", g, x)[..., None] / E
    return dx, np.einsum("ne,ne->e", dy.reshape(-1, E), (x * rstd).reshape(-1, E))


def gqa_kv_backward_loops(dk_repeated, num_kv_groups):
    B, H, S, E = dk_repeated.shape
    rep = H // num_kv_groups
    dk = np.zeros((B, num_kv_groups, S, E))
    for h in range(H):
        dk[:, h // rep] += dk_repeated[:, h]
    return dk


def gqa_kv_backward_add_at(dk_repeated, num_kv_groups):
    B, H, S, E = dk_repeated.shape
    dk = np.zeros((B, num_kv_groups, S, E))
    np.add.at(dk, (slice(None), np.arange(H) // (H // num_kv_groups)), dk_repeated)
    return dk


def softcap_backward_cosh(scores, dout, cap):
    return dout / np.cosh(scores / cap) ** 2  # 1 - tanh^2 = sech^2


def softcap_backward_chain(scores, dout, cap):
    t = np.tanh(scores / cap)
    dt = cap * dout  # out = cap * t
    return dt * (1 - t**2) / cap  # t = tanh(u), u = scores / cap


def sinks_backward_concat(attn_scores, sinks, dattn_weights):
    """The softmax of [scores, sink] with the upstream gradient 0 in the sink's column."""
    B, H, L, S = attn_scores.shape
    sink = np.broadcast_to(sinks[None, :, None, None], (B, H, L, 1))
    full = _softmax(np.concatenate([attn_scores, sink], -1))
    g = np.concatenate([dattn_weights, np.zeros((B, H, L, 1))], -1)
    d = full * (g - (g * full).sum(-1, keepdims=True))
    return d[..., :S], d[..., S].sum(axis=(0, 2))


def sinks_backward_jacobian(attn_scores, sinks, dattn_weights):
    B, H, L, S = attn_scores.shape
    ds = np.zeros_like(attn_scores)
    dsinks = np.zeros(H)
    for b, h, i in np.ndindex(B, H, L):
        p = _softmax(np.append(attn_scores[b, h, i], sinks[h]))
        J = np.diag(p) - np.outer(p, p)
        d = J.T @ np.append(dattn_weights[b, h, i], 0.0)
        ds[b, h, i], dsinks[h] = d[:S], dsinks[h] + d[S]
    return ds, dsinks


def kv_decode_step_einsum(q, k_cache, v_cache, k_new, v_new):
    keys = np.concatenate([k_cache, k_new], axis=2)
    values = np.concatenate([v_cache, v_new], axis=2)
    w = _softmax(np.einsum("bhqe,bhse->bhqs", q, keys) / np.sqrt(q.shape[-1]))
    return np.einsum("bhqs,bhse->bhqe", w, values)


def kv_decode_step_preallocated(q, k_cache, v_cache, k_new, v_new):
    """A preallocated cache buffer, written then read, as a decoder keeps it."""
    B, H, S0, E = k_cache.shape
    keys, values = np.empty((B, H, S0 + 1, E)), np.empty((B, H, S0 + 1, E))
    keys[:, :, :S0], values[:, :, :S0] = k_cache, v_cache
    keys[:, :, S0:], values[:, :, S0:] = k_new, v_new
    return _softmax(q @ keys.swapaxes(-1, -2) / np.sqrt(E)) @ values


def mla_absorbed_weights_einsum(q, c_kv, W_UK):
    B, H, T, E = q.shape
    q_lat = np.einsum("bhte,hec->bhtc", q, W_UK.reshape(H, E, -1))
    return _softmax(np.einsum("bhtc,bsc->bhts", q_lat, c_kv) / np.sqrt(E))


def mla_absorbed_weights_heads(q, c_kv, W_UK):
    """Head by head, with the (E, C) block sliced out of W_UK."""
    B, H, T, E = q.shape
    out = np.empty((B, H, T, c_kv.shape[1]))
    for h in range(H):
        W_h = W_UK[h * E : (h + 1) * E]  # (E, C)
        out[:, h] = _softmax((q[:, h] @ W_h) @ c_kv.swapaxes(-1, -2) / np.sqrt(E))
    return out


ALTERNATIVES = {
    "simple_attention": (simple_attention_loops, simple_attention_einsum),
    "self_attention": (self_attention_einsum, self_attention_rows),
    "causal_attention_weights": (causal_attention_weights_tril, causal_attention_weights_loops),
    "softmax_backward": (softmax_backward_jacobian, softmax_backward_einsum),
    "linear_backward": (linear_backward_einsum, linear_backward_loops),
    "mask_renormalize_backward": (
        mask_renormalize_backward_jacobian,
        mask_renormalize_backward_einsum,
    ),
    "dropout_backward": (dropout_backward_where, dropout_backward_loops),
    "split_heads_backward": (split_heads_backward_loops, split_heads_backward_einsum),
    "sdpa_backward": (sdpa_backward_einsum, sdpa_backward_rows),
    "masked_sdpa_backward": (masked_sdpa_backward_einsum, masked_sdpa_backward_rows),
    "mha_backward": (mha_backward_per_head, mha_backward_einsum),
    "online_softmax_attention": (online_softmax_attention_rows, online_softmax_attention_lse),
    "tiled_sdpa_backward": (tiled_sdpa_backward_einsum, tiled_sdpa_backward_query_blocks),
    "rope_backward": (rope_backward_pairs, rope_backward_complex),
    "rmsnorm_backward": (rmsnorm_backward_jacobian, rmsnorm_backward_einsum),
    "gqa_kv_backward": (gqa_kv_backward_loops, gqa_kv_backward_add_at),
    "softcap_backward": (softcap_backward_cosh, softcap_backward_chain),
    "sinks_backward": (sinks_backward_concat, sinks_backward_jacobian),
    "kv_decode_step": (kv_decode_step_einsum, kv_decode_step_preallocated),
    "mla_absorbed_weights": (mla_absorbed_weights_einsum, mla_absorbed_weights_heads),
}
