"""Plain torch functional code for the modern stages, used as the autograd reference by the
tests of RoPE, RMSNorm, soft-capping, sinks and the modern attention classes.

Written from the formulas, independently of npattn and torch_port: each function takes torch
tensors (float64, requires_grad where a gradient is wanted) and returns torch tensors.
Shapes follow npattn: q (..., L, E), k (..., S, E), v (..., S, Ev); masks boolean, True = attend.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def attention(q, k, v, mask=None, *, scale=None, softcap=None, sinks=None, keep=None, p=0.0):
    """softmax(softcap(q k^T * scale), masked, with sinks) (* keep / (1 - p)) @ v.

    A fully masked row (without sinks) gives 0, as torch's SDPA does.
    """
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ k.transpose(-1, -2)) * scale
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    if mask is not None:
        s = s.masked_fill(~torch.as_tensor(np.asarray(mask)), -torch.inf)
    m = s.detach().amax(-1, keepdim=True)
    if sinks is not None:
        sink = sinks.reshape(-1, 1, 1) if sinks.ndim == 1 else sinks
        m = torch.maximum(m, sink.detach())
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)  # fully masked rows
    e = torch.exp(s - m)
    denom = e.sum(-1, keepdim=True)
    if sinks is not None:
        denom = denom + torch.exp(sink - m)
    denom = torch.where(denom == 0, torch.ones_like(denom), denom)
    w = e / denom
    if keep is not None:
        w = w * torch.as_tensor(np.asarray(keep)) / (1 - p)
    return w @ v


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def rope(x, cos, sin):
    """Split halves: x * cos + rotate_half(x) * sin; cos, sin (T, E) tensors."""
    return x * cos + rotate_half(x) * sin


def rope_interleaved(x, cos, sin):
    """Pairs (2i, 2i + 1) rotated by the angle of column i of the split-halves table."""
    c, s = cos[..., : x.shape[-1] // 2], sin[..., : x.shape[-1] // 2]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1).flatten(-2)


def rope_partial(x, cos, sin, interleaved=False):
    """Partial rotary: the first R = cos.shape[-1] dims rotated, the rest passed through."""
    r = cos.shape[-1]
    turn = rope_interleaved if interleaved else rope
    return torch.cat([turn(x[..., :r], cos, sin), x[..., r:]], dim=-1)


def rmsnorm(x, scale, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * scale


def params(state_dict):
    """A numpy state dict as float64 leaf tensors that require grad."""
    return {k: torch.tensor(np.array(v, dtype=np.float64), requires_grad=True) for k, v in
            state_dict.items()}  # fmt: skip


def linear(x, P, name):
    y = x @ P[f"{name}.weight"].T
    return y + P[f"{name}.bias"] if f"{name}.bias" in P else y


def heads(x, n):
    """(B, T, n * E) -> (B, n, T, E)."""
    B, T, w = x.shape
    return x.view(B, T, n, w // n).transpose(1, 2)


def merge(x):
    B, H, T, E = x.shape
    return x.transpose(1, 2).reshape(B, T, H * E)


def gqa(P, x, num_heads, num_kv_groups, mask, keep=None, p=0.0, x_kv=None):
    src = x if x_kv is None else x_kv
    q = heads(linear(x, P, "W_query"), num_heads)
    k = heads(linear(src, P, "W_key"), num_kv_groups)
    v = heads(linear(src, P, "W_value"), num_kv_groups)
    g = num_heads // num_kv_groups
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    return linear(merge(attention(q, k, v, mask, keep=keep, p=p)), P, "out_proj")


def swa(P, x, num_heads, mask, keep=None, p=0.0):
    return gqa(P, x, num_heads, num_heads, mask, keep, p)


def mla(P, x, num_heads, mask, keep=None, p=0.0):
    q = heads(linear(x, P, "W_query"), num_heads)
    c = linear(x, P, "W_DKV")
    k, v = heads(linear(c, P, "W_UK"), num_heads), heads(linear(c, P, "W_UV"), num_heads)
    return linear(merge(attention(q, k, v, mask, keep=keep, p=p)), P, "out_proj")


def qwen3(P, x, num_heads, num_kv_groups, mask, cos, sin):
    q = heads(linear(x, P, "W_query"), num_heads)
    k = heads(linear(x, P, "W_key"), num_kv_groups)
    v = heads(linear(x, P, "W_value"), num_kv_groups)
    if "q_norm.scale" in P:
        q, k = rmsnorm(q, P["q_norm.scale"]), rmsnorm(k, P["k_norm.scale"])
    T = x.shape[1]
    q, k = rope(q, cos[:T], sin[:T]), rope(k, cos[:T], sin[:T])
    g = num_heads // num_kv_groups
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    return linear(merge(attention(q, k, v, mask)), P, "out_proj")


def rope_params(head_dim, base, T):
    """cos, sin (T, head_dim) in float64, split halves: angle = p * base ** (-2i / head_dim)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return torch.cos(angles), torch.sin(angles)


def causal_window_mask(T, S, window=None, lengths=None):
    """Boolean (T, S) or (B, 1, T, S): 0 <= i - j (< window), & j < lengths[b]."""
    diff = np.arange(T)[:, None] - np.arange(S)[None, :]
    mask = (diff >= 0) & (diff < (window if window is not None else S + T))
    if lengths is not None:
        mask = mask & (np.arange(S)[None, :] < np.asarray(lengths)[:, None])[:, None, None, :]
    return mask
