"""Attention modules written the way people write them, to point the testing kit at.

None of these is torch_port's own: each follows the habits of a well-known code base (fused
c_attn, Hugging Face's Conv1D, separate projections, grouped keys and values, a KV cache),
with a `bug=` switch that plants one classic mistake. Shapes: x (B, T, C) -> (B, T, C),
C = n_head * head_dim unless stated.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class NanoGPTAttention(nn.Module):
    """nanoGPT's CausalSelfAttention: one c_attn for q, k, v; SDPA, or the explicit path."""

    def __init__(self, n_embd, n_head, block_size, bias=True, dropout=0.0, flash=True, bug=None):
        super().__init__()
        assert n_embd % n_head == 0
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        self.n_head, self.n_embd, self.dropout = n_head, n_embd, dropout
        self.flash, self.bug = flash, bug
        tril = torch.tril(torch.ones(block_size, block_size))
        self.register_buffer("bias", tril.view(1, 1, block_size, block_size))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if self.bug == "detached keys":
            k = k.detach()
        if self.flash:
            p = self.dropout if (self.training or self.bug == "dropout in eval") else 0.0
            if self.bug == "triu mask to SDPA":  # True means attend: this sees the future
                mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), 1)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
            else:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            scale = 1.0 / math.sqrt(k.size(-1))
            if self.bug == "no 1/sqrt(d_k)":
                scale = 1.0
            if self.bug == "scale by model width":
                scale = 1.0 / math.sqrt(C)
            att = (q @ k.transpose(-2, -1)) * scale  # (B, nh, T, T)
            keep = self.bias[:, :, :T, :T]
            if self.bug == "sees one token ahead":
                keep = torch.tril(torch.ones(T, T, device=x.device), diagonal=1)
            att = att.masked_fill(keep == 0, float("-inf"))
            att = F.softmax(att, dim=-2 if self.bug == "softmax over queries" else -1)
            att = self.attn_dropout(att)
            y = att @ v  # (B, nh, T, T) x (B, nh, T, hs) -> (B, nh, T, hs)
        if self.bug == "heads merged without transpose":
            y = y.reshape(B, T, C)
        else:
            y = y.transpose(1, 2).contiguous().view(B, T, C)
        if self.bug == "detached c_proj bias":
            return self.resid_dropout(y @ self.c_proj.weight.T + self.c_proj.bias.detach())
        return self.resid_dropout(self.c_proj(y))


class MinGPTAttention(nn.Module):
    """minGPT's CausalSelfAttention: c_attn, explicit masked softmax, 1/sqrt(hs) on the right."""

    def __init__(self, n_embd, n_head, block_size, attn_pdrop=0.0, resid_pdrop=0.0):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.attn_dropout = nn.Dropout(attn_pdrop)
        self.resid_dropout = nn.Dropout(resid_pdrop)
        mask = torch.tril(torch.ones(block_size, block_size))
        self.register_buffer("bias", mask.view(1, 1, block_size, block_size))
        self.n_head, self.n_embd = n_head, n_embd

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        hs = C // self.n_head
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = self.attn_dropout(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class Conv1D(nn.Module):
    """Hugging Face's Conv1D: a linear layer with the weight stored transposed, (nx, nf)."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


class GPT2StyleAttention(nn.Module):
    """Hugging Face GPT2Attention's eager path: Conv1D layers, returns (output, present)."""

    def __init__(self, embed_dim, num_heads, max_positions):
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.split_size = embed_dim
        self.c_attn = Conv1D(3 * embed_dim, embed_dim)
        self.c_proj = Conv1D(embed_dim, embed_dim)
        causal = torch.tril(torch.ones(max_positions, max_positions, dtype=torch.bool))
        self.register_buffer("bias", causal.view(1, 1, max_positions, max_positions))
        with torch.no_grad():  # GPT-2 biases start at zero: make them visible to the test
            self.c_attn.bias.normal_(std=0.02)
            self.c_proj.bias.normal_(std=0.02)

    def _split_heads(self, t):
        new_shape = t.size()[:-1] + (self.num_heads, self.head_dim)
        return t.view(new_shape).permute(0, 2, 1, 3)  # (B, H, T, E)

    def _attn(self, query, key, value):
        attn_weights = torch.matmul(query, key.transpose(-1, -2))
        attn_weights = attn_weights / torch.full(
            [], value.size(-1) ** 0.5, dtype=attn_weights.dtype, device=attn_weights.device
        )
        q_len, k_len = query.size(-2), key.size(-2)
        causal_mask = self.bias[:, :, k_len - q_len : k_len, :k_len]
        mask_value = torch.full([], torch.finfo(attn_weights.dtype).min, dtype=attn_weights.dtype)
        attn_weights = torch.where(causal_mask, attn_weights, mask_value)
        attn_weights = nn.functional.softmax(attn_weights, dim=-1)
        return torch.matmul(attn_weights, value), attn_weights

    def forward(self, hidden_states):
        query, key, value = self.c_attn(hidden_states).split(self.split_size, dim=2)
        query, key, value = map(self._split_heads, (query, key, value))
        attn_output, _ = self._attn(query, key, value)
        attn_output = attn_output.permute(0, 2, 1, 3).contiguous()  # (B, T, H, E)
        attn_output = attn_output.view(attn_output.size()[:-2] + (self.embed_dim,))
        return self.c_proj(attn_output), None


def causal_not_allowed(T: int, device=None) -> torch.Tensor:
    """nn.MultiheadAttention's causal mask: True where a query may NOT look (the future)."""
    return torch.triu(torch.ones(T, T, dtype=torch.bool, device=device), diagonal=1)


class SeparateQKVAttention(nn.Module):
    """Separate q/k/v/out projections with biases (BART, OPT, Whisper style), causal SDPA."""

    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def _shape(self, t, B, T):
        return t.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, E)

    def forward(self, hidden_states):
        B, T, _ = hidden_states.shape
        q = self._shape(self.q_proj(hidden_states), B, T)
        k = self._shape(self.k_proj(hidden_states), B, T)
        v = self._shape(self.v_proj(hidden_states), B, T)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, self.embed_dim))


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_cos_sin(T: int, head_dim: int, base: float, dtype, device=None):
    """Split-halves RoPE tables for positions 0..T-1: cos, sin (T, head_dim)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # (T, E/2)
    emb = torch.cat((angles, angles), dim=-1)  # (T, E)
    return emb.cos().to(dtype=dtype, device=device), emb.sin().to(dtype=dtype, device=device)


class LlamaStyleAttention(nn.Module):
    """Llama-style grouped-query attention: no biases, num_key_value_heads < num_heads,
    optional RoPE from (cos, sin), returns (output, attn_weights) like Hugging Face."""

    def __init__(self, hidden_size, num_heads, num_key_value_heads, bug=None):
        super().__init__()
        self.num_heads, self.num_key_value_heads = num_heads, num_key_value_heads
        self.head_dim = hidden_size // num_heads
        self.num_key_value_groups = num_heads // num_key_value_heads  # HF: the group SIZE
        kv = num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(hidden_size, num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, kv, bias=False)
        self.v_proj = nn.Linear(hidden_size, kv, bias=False)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden_size, bias=False)
        self.bug = bug

    def _repeat_kv(self, t):  # (B, Hkv, S, E) -> (B, H, S, E), heads [K1, K1, K2, K2]
        if self.bug == "kv heads tiled, not interleaved":
            return t.repeat(1, self.num_key_value_groups, 1, 1)  # [K1, K2, K1, K2]
        return t.repeat_interleave(self.num_key_value_groups, dim=1)

    def forward(self, hidden_states, cos=None, sin=None):
        B, T, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(B, T, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden_states).view(B, T, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden_states).view(B, T, -1, self.head_dim).transpose(1, 2)
        if cos is not None:
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        k, v = self._repeat_kv(k), self._repeat_kv(v)
        attn = (q @ k.transpose(2, 3)) / math.sqrt(self.head_dim)  # (B, H, T, T)
        future = torch.triu(torch.ones(T, T, dtype=torch.bool, device=q.device), 1)
        attn = attn.masked_fill(future, float("-inf")).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(B, T, -1)  # (B, T, H * E)
        return self.o_proj(out), attn


class LowRankQueryAttention(nn.Module):
    """Causal attention whose query projection is factored, W_q = q_up @ q_down (a LoRA-like
    product of two layers), with a planted bug that detaches one factor."""

    def __init__(self, d, n_head, rank, bug=None):
        super().__init__()
        self.n_head, self.bug = n_head, bug
        self.q_down = nn.Linear(d, rank, bias=False)
        self.q_up = nn.Linear(rank, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        B, T, C = x.shape
        down = self.q_down(x)
        q = self.q_up(down.detach() if self.bug == "detached q_down" else down)
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in (q, self.k(x), self.v(x)))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


def low_rank_map(p):
    """LowRankQueryAttention in the chapter's keys: W_query is the product of the factors."""
    d = p["k.weight"].shape[0]
    zeros = torch.zeros(d, dtype=torch.float64)
    return {
        "W_query.weight": p["q_up.weight"] @ p["q_down.weight"],  # (d, r) @ (r, d)
        "W_key.weight": p["k.weight"],
        "W_value.weight": p["v.weight"],
        "out_proj.weight": p["proj.weight"],
        "out_proj.bias": p["proj.bias"],
        **{f"{n}.bias": zeros for n in ("W_query", "W_key", "W_value")},
    }


class CachedAttention(nn.Module):
    """Multi-head attention with a KV cache, as people add one to the chapter's class:
    forward(x, use_cache=False), reset_cache(), ptr_current_pos. No output bias (so that a
    GroupedQueryAttention with num_kv_groups = num_heads is its reference)."""

    def __init__(self, d_in, d_out, num_heads, context_length, bug=None):
        super().__init__()
        self.num_heads, self.head_dim, self.d_out = num_heads, d_out // num_heads, d_out
        self.W_query = nn.Linear(d_in, d_out, bias=False)
        self.W_key = nn.Linear(d_in, d_out, bias=False)
        self.W_value = nn.Linear(d_in, d_out, bias=False)
        self.out_proj = nn.Linear(d_out, d_out, bias=False)
        self.register_buffer(
            "mask", torch.triu(torch.ones(context_length, context_length), 1), persistent=False
        )
        self.bug = bug
        self.reset_cache()

    def reset_cache(self):
        self.cache_k, self.cache_v, self.ptr_current_pos = None, None, 0

    def forward(self, x, use_cache=False):
        b, T, _ = x.shape
        q, k, v = (
            w(x).view(b, T, self.num_heads, self.head_dim).transpose(1, 2)  # (b, H, T, E)
            for w in (self.W_query, self.W_key, self.W_value)
        )
        if use_cache:
            if self.cache_k is not None:
                k = torch.cat([self.cache_k, k], dim=2)
                v = torch.cat([self.cache_v, v], dim=2)
            self.cache_k, self.cache_v = k, v
        else:
            self.reset_cache()
        S, start = k.shape[2], self.ptr_current_pos  # this chunk's absolute positions
        if use_cache and self.bug != "pointer never advances":
            self.ptr_current_pos += T
        if self.bug == "mask without its offset":  # is_causal aligns top-left when T != S
            context = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = q @ k.transpose(2, 3) / self.head_dim**0.5  # (b, H, T, S)
            scores = scores.masked_fill(self.mask.bool()[start : start + T, :S], -torch.inf)
            context = scores.softmax(dim=-1) @ v  # (b, H, T, E)
        return self.out_proj(context.transpose(1, 2).reshape(b, T, self.d_out))


def my_sdpa(
    q,
    k,
    v,
    attn_mask=None,
    dropout_p=0.0,
    is_causal=False,
    scale=None,
    enable_gqa=False,
    dropout_mask=None,
    bug=None,
):
    """An SDPA written by hand, as for a custom kernel; `bug` plants one classic mistake.

    Shapes: q (B, H, L, E), k, v (B, Hkv, S, E) -> (B, H, L, E).
    """
    if enable_gqa:
        n_rep = q.size(-3) // k.size(-3)
        if bug == "repeat, not repeat_interleave":  # heads [K1, K2, K1, K2]
            k, v = k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1)
        else:
            k, v = k.repeat_interleave(n_rep, dim=-3), v.repeat_interleave(n_rep, dim=-3)
    if scale is None or bug == "ignores scale":
        scale = 1 / math.sqrt(q.size(-1))
    att = (q @ k.transpose(-2, -1)) * scale  # (B, H, L, S)
    L, S = att.shape[-2:]
    if is_causal:
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        blocked = attn_mask if bug == "mask polarity" else ~attn_mask
        att = att.masked_fill(blocked, float("-inf"))
    elif attn_mask is not None:
        att = att + attn_mask
    if bug == "NaN on fully masked rows":
        att = att.softmax(dim=-1)
    else:
        empty = torch.isneginf(att).all(dim=-1, keepdim=True)
        att = att.masked_fill(empty, 0.0).softmax(dim=-1).masked_fill(empty, 0.0)
    if dropout_mask is not None:
        att = att * dropout_mask / (1.0 - dropout_p)
    return att @ v
