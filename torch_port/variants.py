"""The bonus notebook's efficient multi-head attention variants, each computing exactly the
function of the chapter's MultiHeadAttention (from Raschka's mha-implementations notebook).

Every variant takes the notebook's constructor arguments
    (d_in, d_out, num_heads, context_length, dropout=0.0, qkv_bias=False)
(note: num_heads before context_length, unlike the chapter), and has a classmethod
`from_mha(mha, **kwargs)` that builds it from a chapter MultiHeadAttention with the same
weights, dtype and device, so `variant(x)` equals `mha(x)` in eval mode.

Where the notebook and the chapter differ, the port follows the chapter's function:
- MHAPyTorchSDPAWithoutFlash builds its boolean mask with tril (True = attend); the notebook's
  triu mask lets each token attend only to the *future* (docs/torch_port.md shows the kit
  catching it).
- MHAPyTorchClass uses nn.MultiheadAttention's own polarity (True = not allowed), does not use
  add_bias_kv (which appends a learned key/value token), and starts its inner out_proj at the
  identity, so its outer `proj` plays the chapter's out_proj.

The SDPA variants take `backend=`: None (torch chooses), "flash", "efficient", "math", "cudnn",
a torch.nn.attention.SDPBackend, or a list of them; it is used with sdpa_kernel in forward.

Shape legend: B batch, T tokens, H = num_heads, E = head_dim = d_out // H.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

try:  # torch >= 2.5
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:  # pragma: no cover - depends on the installed torch
    create_block_mask = flex_attention = None

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
}


def resolve_backend(backend) -> list[SDPBackend] | None:
    """None, a name ("flash", "efficient", "math", "cudnn"), an SDPBackend, or a list of them."""
    if backend is None:
        return None
    chosen = backend if isinstance(backend, (list, tuple)) else [backend]
    out = []
    for b in chosen:
        if isinstance(b, str) and b not in BACKENDS:
            raise ValueError(
                f"backend must be one of {sorted(BACKENDS)} or an SDPBackend, got {b!r}"
            )
        out.append(BACKENDS[b] if isinstance(b, str) else b)
    return out


def _chapter_mask(context_length: int) -> torch.Tensor:
    """The chapter's buffer: triu(ones, 1), 1 = masked."""
    return torch.triu(torch.ones(context_length, context_length), diagonal=1)


def _attend_mask(context_length: int) -> torch.Tensor:
    """Boolean causal mask, True = attend (SDPA's polarity): tril(ones)."""
    return torch.tril(torch.ones(context_length, context_length, dtype=torch.bool))


def _copy_linear(dst: nn.Linear, src: nn.Linear) -> None:
    dst.weight.copy_(src.weight)
    if src.bias is not None:
        dst.bias.copy_(src.bias)


def _split_qkv(tensors: dict, weight: str, bias: str, proj: str) -> dict:
    """A combined (3 * d_out, d_in) projection and an output Linear, in MHA's keys."""
    out = {}
    for name, w in zip(("W_query", "W_key", "W_value"), tensors[weight].chunk(3, dim=0)):
        out[f"{name}.weight"] = w  # (3 * d_out, d_in) -> 3 x (d_out, d_in)
    if bias in tensors:
        for name, b in zip(("W_query", "W_key", "W_value"), tensors[bias].chunk(3, dim=0)):
            out[f"{name}.bias"] = b  # (3 * d_out,) -> 3 x (d_out,)
    out["out_proj.weight"] = tensors[f"{proj}.weight"]
    out["out_proj.bias"] = tensors[f"{proj}.bias"]
    return out


class _Variant(nn.Module):
    """Shared arguments, the token check, the SDPA backend choice and from_mha."""

    def __init__(self, d_in, d_out, num_heads, context_length, dropout=0.0, qkv_bias=False):
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.d_in, self.d_out, self.num_heads = d_in, d_out, num_heads
        self.head_dim = d_out // num_heads
        self.context_length = context_length
        self.qkv_bias = qkv_bias
        self.backend = None

    @property
    def backend(self):
        """The SDPA kernel choice: None, a name, an SDPBackend or a list (checked when set)."""
        return self._backend

    @backend.setter
    def backend(self, value) -> None:
        resolve_backend(value)  # raises ValueError on an unknown name
        self._backend = value

    def _check(self, x: torch.Tensor) -> tuple[int, int]:
        if x.dim() != 3 or x.shape[1] > self.context_length or x.shape[2] != self.d_in:
            raise ValueError(
                f"x must have shape (B, T <= context_length={self.context_length}, "
                f"d_in={self.d_in}), got {tuple(x.shape)}"
            )
        return x.shape[0], x.shape[1]

    def _sdpa_context(self):
        """sdpa_kernel(self.backend), or no restriction when backend is None."""
        backends = resolve_backend(self._backend)
        return contextlib.nullcontext() if backends is None else sdpa_kernel(backends)

    @classmethod
    def from_mha(cls, mha: nn.Module, **kwargs):
        """This variant with the weights, dtype and device of a chapter MultiHeadAttention.

        Works for torch_port.MultiHeadAttention and the chapter's own class; kwargs go to the
        constructor (e.g. backend="math", need_weights=False).
        """
        if not isinstance(mha, nn.Module):
            raise TypeError(
                f"mha must be a torch chapter MultiHeadAttention, got {type(mha).__name__} "
                f"(for an npattn module, convert it first: torch_port.from_npattn(mha))"
            )
        backend = kwargs.pop("backend", None)
        try:
            args = dict(
                d_in=mha.W_query.in_features,
                d_out=mha.d_out,
                num_heads=mha.num_heads,
                context_length=mha.mask.shape[0],
                dropout=mha.dropout.p,
                qkv_bias=mha.W_query.bias is not None,
            )
        except AttributeError as e:
            raise TypeError(
                f"mha must be a chapter MultiHeadAttention (W_query, W_key, W_value, out_proj, "
                f"mask, dropout, d_out, num_heads), got {type(mha).__name__}: {e}"
            ) from e
        new = cls(**args, **kwargs).to(device=mha.out_proj.weight.device)
        new = new.to(dtype=mha.out_proj.weight.dtype)  # before copying: no float32 round trip
        new.backend = backend
        with torch.no_grad():
            new._load_mha(mha)
        return new.train(mha.training)

    def _load_mha(self, mha) -> None:
        raise NotImplementedError

    def to_mha_layout(self, tensors: dict) -> dict:
        """Tensors keyed like this variant's parameters (weights or their gradients) rearranged
        into the chapter MultiHeadAttention's keys and layout: W_query.weight (d_out, d_in), ...

        The map only slices, concatenates and transposes, so it carries gradients too.
        """
        raise NotImplementedError

    def _merge_heads(self, context: torch.Tensor, b: int, T: int) -> torch.Tensor:
        context = context.transpose(1, 2)  # (B, H, T, E) -> (B, T, H, E)
        return context.contiguous().view(b, T, self.d_out)  # (B, T, H, E) -> (B, T, d_out)


class _CombinedQKV(_Variant):
    """One nn.Linear(d_in, 3 * d_out) for queries, keys and values, and `proj`."""

    def __init__(self, d_in, d_out, num_heads, context_length, dropout=0.0, qkv_bias=False):
        super().__init__(d_in, d_out, num_heads, context_length, dropout, qkv_bias)
        self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)
        self.proj = nn.Linear(d_out, d_out)

    def _load_mha(self, mha) -> None:
        layers = (mha.W_query, mha.W_key, mha.W_value)
        self.qkv.weight.copy_(torch.cat([m.weight for m in layers], dim=0))  # (3 * d_out, d_in)
        if self.qkv.bias is not None:
            self.qkv.bias.copy_(torch.cat([m.bias for m in layers], dim=0))  # (3 * d_out,)
        _copy_linear(self.proj, mha.out_proj)

    def to_mha_layout(self, tensors: dict) -> dict:
        return _split_qkv(tensors, "qkv.weight", "qkv.bias", "proj")

    def _qkv_heads(self, x, b, T):
        qkv = self.qkv(x)  # (B, T, d_in) -> (B, T, 3 * d_out)
        qkv = qkv.view(b, T, 3, self.num_heads, self.head_dim)  # -> (B, T, 3, H, E)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (B, T, 3, H, E) -> (3, B, H, T, E)
        return qkv.unbind(0)  # 3 x (B, H, T, E)


class MultiHeadAttentionCombinedQKV(_CombinedQKV):
    """The chapter's MHA with one combined qkv projection (notebook variant 2).

    Shapes: x (B, T, d_in) -> (B, T, d_out). Buffer `mask` is the chapter's triu (1 = masked).
    """

    def __init__(self, d_in, d_out, num_heads, context_length, dropout=0.0, qkv_bias=False):
        super().__init__(d_in, d_out, num_heads, context_length, dropout, qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", _chapter_mask(context_length))

    def forward(self, x):
        b, T = self._check(x)
        queries, keys, values = self._qkv_heads(x, b, T)  # 3 x (B, H, T, E)
        attn_scores = queries @ keys.transpose(
            -2, -1
        )  # (B, H, T, E) @ (B, H, E, T) -> (B, H, T, T)
        attn_scores = attn_scores.masked_fill(self.mask.bool()[:T, :T], -torch.inf)
        attn_weights = torch.softmax(attn_scores / self.head_dim**0.5, dim=-1)  # (B, H, T, T)
        attn_weights = self.dropout(attn_weights)
        context_vec = attn_weights @ values  # (B, H, T, T) @ (B, H, T, E) -> (B, H, T, E)
        return self.proj(self._merge_heads(context_vec, b, T))  # (B, T, d_out)


class MHAEinsum(_Variant):
    """The chapter's MHA written with torch.einsum and raw (d_in, d_out) weights (variant 3).

    Shapes: x (B, T, d_in) -> (B, T, d_out); W_query/W_key/W_value (d_in, d_out);
    bias_q/bias_k/bias_v (d_out,) when qkv_bias; out_proj an nn.Linear.
    """

    def __init__(self, d_in, d_out, num_heads, context_length, dropout=0.0, qkv_bias=False):
        super().__init__(d_in, d_out, num_heads, context_length, dropout, qkv_bias)
        bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default init range
        for name in ("W_query", "W_key", "W_value"):
            self.register_parameter(name, nn.Parameter(torch.empty(d_in, d_out)))
            nn.init.uniform_(getattr(self, name), -bound, bound)
        for name in ("bias_q", "bias_k", "bias_v"):
            bias = nn.Parameter(torch.empty(d_out).uniform_(-bound, bound)) if qkv_bias else None
            self.register_parameter(name, bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", _chapter_mask(context_length))

    def _load_mha(self, mha) -> None:
        for w, b, src in (
            ("W_query", "bias_q", mha.W_query),
            ("W_key", "bias_k", mha.W_key),
            ("W_value", "bias_v", mha.W_value),
        ):
            getattr(self, w).copy_(src.weight.T)  # (d_out, d_in) -> (d_in, d_out)
            if src.bias is not None:
                getattr(self, b).copy_(src.bias)
        _copy_linear(self.out_proj, mha.out_proj)

    def to_mha_layout(self, tensors: dict) -> dict:
        out = {}
        for w, b, name in (
            ("W_query", "bias_q", "W_query"),
            ("W_key", "bias_k", "W_key"),
            ("W_value", "bias_v", "W_value"),
        ):
            out[f"{name}.weight"] = tensors[w].T  # (d_in, d_out) -> (d_out, d_in)
            if b in tensors:
                out[f"{name}.bias"] = tensors[b]
        out["out_proj.weight"] = tensors["out_proj.weight"]
        out["out_proj.bias"] = tensors["out_proj.bias"]
        return out

    def _project(self, x, W, bias, b, T):
        y = torch.einsum("bnd,di->bni", x, W)  # (B, T, d_in), (d_in, d_out) -> (B, T, d_out)
        if bias is not None:
            y = y + bias
        return y.view(b, T, self.num_heads, self.head_dim).transpose(1, 2)  # -> (B, H, T, E)

    def forward(self, x):
        b, T = self._check(x)
        Q = self._project(x, self.W_query, self.bias_q, b, T)  # (B, H, T, E)
        K = self._project(x, self.W_key, self.bias_k, b, T)  # (B, H, T, E)
        V = self._project(x, self.W_value, self.bias_v, b, T)  # (B, H, T, E)
        scores = torch.einsum("bhnd,bhmd->bhnm", Q, K) / self.head_dim**0.5  # (B, H, T, T)
        scores = scores.masked_fill(self.mask.bool()[:T, :T], -torch.inf)
        attn_weights = self.dropout(torch.softmax(scores, dim=-1))  # (B, H, T, T)
        context = torch.einsum("bhnm,bhmd->bhnd", attn_weights, V)  # -> (B, H, T, E)
        return self.out_proj(self._merge_heads(context, b, T))  # (B, T, d_out)


class MHAPyTorchScaledDotProduct(_CombinedQKV):
    """Combined qkv + F.scaled_dot_product_attention(is_causal=True) (variant 4).

    Shapes: x (B, T, d_in) -> (B, T, d_out). `dropout` is a float, applied only in training;
    `backend` picks the SDPA kernel (see the module docstring).
    """

    def __init__(
        self, d_in, d_out, num_heads, context_length, dropout=0.0, qkv_bias=False, backend=None
    ):
        super().__init__(d_in, d_out, num_heads, context_length, dropout, qkv_bias)
        self.dropout = dropout
        self.backend = backend

    def _attend(self, queries, keys, values, T):
        dropout_p = self.dropout if self.training else 0.0  # SDPA always drops when p > 0
        return F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=None, dropout_p=dropout_p, is_causal=True
        )

    def forward(self, x):
        b, T = self._check(x)
        queries, keys, values = self._qkv_heads(x, b, T)  # 3 x (B, H, T, E)
        with self._sdpa_context():
            context_vec = self._attend(queries, keys, values, T)  # (B, H, T, E)
        return self.proj(self._merge_heads(context_vec, b, T))  # (B, T, d_out)


class MHAPyTorchSDPAWithoutFlash(MHAPyTorchScaledDotProduct):
    """SDPA with an explicit boolean causal mask instead of is_causal (variant 5).

    Buffer `mask`: tril(ones).bool(), True = attend. (The notebook passed triu(ones, 1), which
    SDPA reads as "attend only to later tokens".) Shapes: x (B, T, d_in) -> (B, T, d_out).
    """

    def __init__(
        self, d_in, d_out, num_heads, context_length, dropout=0.0, qkv_bias=False, backend=None
    ):
        super().__init__(d_in, d_out, num_heads, context_length, dropout, qkv_bias, backend)
        self.register_buffer("mask", _attend_mask(context_length))

    def _attend(self, queries, keys, values, T):
        dropout_p = self.dropout if self.training else 0.0
        attn_mask = self.mask[:T, :T]  # (T, T), True = attend
        return F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=False
        )


class MHAPyTorchClass(_Variant):
    """torch.nn.MultiheadAttention followed by `proj` (variant 6).

    Shapes: x (B, T, d_in) -> (B, T, d_out); needs d_in == d_out, because
    nn.MultiheadAttention's query width is its embed_dim. Buffer `mask`: tril(ones).bool(),
    True = attend; forward passes its negation, since nn.MultiheadAttention reads True as
    "not allowed". need_weights=False lets it use SDPA (and `backend`); True computes and
    averages the weights as the notebook's default does. The inner out_proj starts at the
    identity, so `proj` is the chapter's out_proj.
    """

    def __init__(
        self,
        d_in,
        d_out,
        num_heads,
        context_length,
        dropout=0.0,
        qkv_bias=False,
        need_weights=True,
        backend=None,
    ):
        super().__init__(d_in, d_out, num_heads, context_length, dropout, qkv_bias)
        if d_in != d_out:
            raise ValueError(
                f"MHAPyTorchClass needs d_in == d_out (nn.MultiheadAttention takes queries of "
                f"width embed_dim = d_out), got d_in={d_in}, d_out={d_out}"
            )
        self.multihead_attn = nn.MultiheadAttention(
            embed_dim=d_out, num_heads=num_heads, dropout=dropout, bias=qkv_bias, batch_first=True
        )
        with torch.no_grad():
            inner = self.multihead_attn.out_proj
            inner.weight.copy_(torch.eye(d_out))
            if inner.bias is not None:
                inner.bias.zero_()
        self.need_weights = need_weights
        self.backend = backend
        self.proj = nn.Linear(d_out, d_out)
        self.register_buffer("mask", _attend_mask(context_length))

    def _load_mha(self, mha) -> None:
        layers = (mha.W_query, mha.W_key, mha.W_value)
        inner = self.multihead_attn
        inner.in_proj_weight.copy_(torch.cat([m.weight for m in layers], dim=0))  # (3d, d)
        if inner.in_proj_bias is not None:
            inner.in_proj_bias.copy_(torch.cat([m.bias for m in layers], dim=0))  # (3 * d_out,)
        _copy_linear(self.proj, mha.out_proj)

    def to_mha_layout(self, tensors: dict) -> dict:
        """As for the other variants; the inner out_proj (the identity) has no MHA counterpart
        and is left out."""
        inner = "multihead_attn."
        return _split_qkv(tensors, inner + "in_proj_weight", inner + "in_proj_bias", "proj")

    def forward(self, x):
        b, T = self._check(x)
        not_allowed = ~self.mask[:T, :T]  # (T, T); nn.MultiheadAttention: True = masked out
        with self._sdpa_context():
            attn_output, _ = self.multihead_attn(
                x, x, x, attn_mask=not_allowed, need_weights=self.need_weights
            )  # (B, T, d_out)
        return self.proj(attn_output)  # (B, T, d_out)


def _causal(b, h, q_idx, kv_idx):
    """FlexAttention mask_mod: query q_idx may attend key kv_idx <= q_idx."""
    return q_idx >= kv_idx


class MHAPyTorchFlexAttention(_CombinedQKV):
    """Combined qkv + FlexAttention with a causal block mask (variant 7).

    Shapes: x (B, T, d_in) -> (B, T, d_out). Needs torch >= 2.5. FlexAttention has no dropout,
    so dropout > 0 in training raises. On CPU (torch 2.13) FlexAttention runs the forward only:
    call it under torch.no_grad(); the backward needs CUDA. Block masks are built per (T, device)
    on first use, so the module follows .to(device).
    """

    def __init__(self, d_in, d_out, num_heads, context_length, dropout=0.0, qkv_bias=False):
        if flex_attention is None:
            raise RuntimeError(
                f"MHAPyTorchFlexAttention needs torch >= 2.5 "
                f"(torch.nn.attention.flex_attention); installed torch is {torch.__version__}"
            )
        super().__init__(d_in, d_out, num_heads, context_length, dropout, qkv_bias)
        self.dropout = dropout
        self._block_masks = {}

    def _block_mask(self, T: int, device: torch.device):
        key = (T, str(device))
        if key not in self._block_masks:
            self._block_masks[key] = create_block_mask(
                _causal, B=None, H=None, Q_LEN=T, KV_LEN=T, device=device
            )
        return self._block_masks[key]

    def forward(self, x):
        b, T = self._check(x)
        if self.training and self.dropout > 0:
            raise NotImplementedError(
                "FlexAttention has no dropout: use dropout=0.0 or call .eval() first"
            )
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        )
        if x.device.type == "cpu" and needs_grad:
            raise NotImplementedError(
                "FlexAttention has no backward on CPU: run the forward under torch.no_grad() "
                "(or torch.inference_mode()), or move the module and x to a CUDA device"
            )
        queries, keys, values = self._qkv_heads(x, b, T)  # 3 x (B, H, T, E)
        context_vec = flex_attention(
            queries, keys, values, block_mask=self._block_mask(T, x.device)
        )  # (B, H, T, E)
        return self.proj(self._merge_heads(context_vec, b, T))  # (B, T, d_out)
