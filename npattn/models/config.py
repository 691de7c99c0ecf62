"""The configuration of a real model's attention layer: data, checked once.

A model family is a choice of values here, not a class: Llama is GQA with RoPE; Qwen2 adds
q, k, v biases; Qwen3 adds a per-head QK-norm; Gemma 2 a custom scale, soft-capping and a
window on some layers; OLMo 2 a QK-norm over the whole projection; gpt-oss biases, a window
and sinks. `npattn.Attention(config)` runs the same numbered steps for all of them, each
option switching its step on (npattn/models/attention.py).

Shape legend: H = num_heads query heads, G = num_kv_heads key/value heads (G divides H),
E = head_dim, d = hidden_size.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields

from .._checks import check_bool, check_positive_int, check_probability, check_real

QK_NORM_WIDTHS = ("all", "head")


def _check_finite(value, name: str, what: str) -> float:
    value = check_real(value, name, what)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_optional_positive_int(value, name: str) -> int | None:
    return None if value is None else check_positive_int(value, name)


def _set(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)  # frozen dataclass: normalise a field in __post_init__


@dataclass(frozen=True)
class QKNorm:
    """RMSNorm on the queries and keys before RoPE.

    width "head": one RMSNorm over each head's E dims, after the heads are split (Qwen3,
    Gemma 3); "all": one over the whole projection, H * E for the queries and G * E for the
    keys, before the split (OLMo 2). offset 1.0 scales by (1 + w) with w starting at 0
    (Gemma 3); 0.0 scales by w starting at 1.
    """

    width: str = "head"
    eps: float = 1e-6
    offset: float = 0.0

    def __post_init__(self):
        if self.width not in QK_NORM_WIDTHS:
            raise ValueError(f"QKNorm width must be one of {QK_NORM_WIDTHS}, got {self.width!r}")
        eps = _check_finite(self.eps, "QKNorm eps", "a float >= 0")
        if eps < 0:
            raise ValueError(f"QKNorm eps must be >= 0, got {eps}")
        _set(self, "eps", eps)
        _set(self, "offset", _check_finite(self.offset, "QKNorm offset", "a float"))


@dataclass(frozen=True)
class AttentionConfig:
    """Every option of a decoder's attention layer; `npattn.Attention(config)` builds it.

    Sizes: hidden_size d, num_heads H, num_kv_heads G (None: G = H; 1: multi-query),
    head_dim E (None: d // H), d_out the output width (None: d). H * E may differ from d
    (Qwen3, Gemma).
    Biases: qkv_bias on W_query, W_key and W_value; out_bias on out_proj.
    qk_norm: a QKNorm, or None. rope: an npattn.RoPE, or None (no rotary embedding: GPT-2).
    scale: the softmax scale (None: 1 / sqrt(E)). window: query i sees key j only when
    0 <= i - j < window (None: every earlier key). softcap: scores become
    softcap * tanh(scores / softcap) before the mask. sinks: one learned logit per head joins
    each row's softmax denominator. causal: False for an encoder's (bidirectional) attention.
    dropout: on the attention weights, in training mode.
    """

    hidden_size: int
    num_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    qkv_bias: bool = False
    out_bias: bool = False
    dropout: float = 0.0
    qk_norm: QKNorm | None = None
    rope: object | None = None  # npattn.RoPE
    scale: float | None = None
    window: int | None = None
    softcap: float | None = None
    sinks: bool = False
    causal: bool = True
    d_out: int | None = None

    def __post_init__(self):
        d = check_positive_int(self.hidden_size, "hidden_size")
        H = check_positive_int(self.num_heads, "num_heads")
        G = (
            H
            if self.num_kv_heads is None
            else check_positive_int(self.num_kv_heads, "num_kv_heads")
        )
        if H % G:
            raise ValueError(f"num_heads ({H}) must be divisible by num_kv_heads ({G})")
        if self.head_dim is None and d % H:
            raise ValueError(
                f"hidden_size ({d}) must be divisible by num_heads ({H}) when head_dim is not given"
            )
        # sizes stored as Python ints: numpy's small integer types would wrap in products
        _set(self, "hidden_size", d)
        _set(self, "num_heads", H)
        if self.num_kv_heads is not None:
            _set(self, "num_kv_heads", G)
        _set(self, "head_dim", _check_optional_positive_int(self.head_dim, "head_dim"))
        _set(self, "d_out", _check_optional_positive_int(self.d_out, "d_out"))
        for name in ("qkv_bias", "out_bias", "sinks", "causal"):
            check_bool(getattr(self, name), name)
        _set(self, "dropout", check_probability(self.dropout, "dropout"))
        if self.qk_norm is not None and not isinstance(self.qk_norm, QKNorm):
            raise TypeError(f"qk_norm must be an npattn.QKNorm or None, got {self.qk_norm!r}")
        if self.rope is not None:
            from ..ops.rope_config import RoPE  # the table maths lives with the RoPE op

            if not isinstance(self.rope, RoPE):
                raise TypeError(f"rope must be an npattn.RoPE or None, got {self.rope!r}")
            self.rope.inv_freq(self.head_size)  # the rotated dims and the scaling, checked now
        if self.scale is not None:
            scale = _check_finite(self.scale, "scale", "a float or None")
            if scale <= 0:
                raise ValueError(f"scale must be > 0, got {scale}")
            _set(self, "scale", scale)
        _set(self, "window", _check_optional_positive_int(self.window, "window"))
        if self.window is not None and not self.causal:
            raise ValueError("window needs causal=True (a window counts earlier keys)")
        if self.softcap is not None:
            softcap = _check_finite(self.softcap, "softcap", "a float > 0 or None")
            if softcap <= 0:
                raise ValueError(f"softcap must be > 0, got {softcap}")
            _set(self, "softcap", softcap)

    @property
    def kv_heads(self) -> int:
        """G, the number of key/value heads."""
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def head_size(self) -> int:
        """E, the head dim."""
        return self.hidden_size // self.num_heads if self.head_dim is None else self.head_dim

    @property
    def out_width(self) -> int:
        """The output width: d_out, or hidden_size."""
        return self.hidden_size if self.d_out is None else self.d_out

    @property
    def group_size(self) -> int:
        """H / G, the query heads that share one key/value head."""
        return self.num_heads // self.kv_heads

    @property
    def softmax_scale(self) -> float:
        """The scale the scores are multiplied by: `scale`, or 1 / sqrt(E)."""
        return 1.0 / math.sqrt(self.head_size) if self.scale is None else self.scale

    def describe(self) -> str:
        """The fields that differ from their defaults, as `name=value, ...`."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.default is MISSING or value != f.default:
                parts.append(f"{f.name}={value!r}")
        return ", ".join(parts)
