"""Ready weight maps for the usual layouts, into the chapter's keys.

Each function returns a map: a callable taking your module's parameters {name: tensor} and
returning the reference's entries W_query / W_key / W_value (.weight, .bias) and out_proj
(.weight, .bias), in torch's (d_out, d_in) layout, built with differentiable torch ops so
your gradients are the reference's pulled back through it. A bias your module does not have
is given as zeros (no gradient); the kit drops an all-zero entry the reference lacks (e.g.
out_proj.bias for GroupedQueryAttention). `prefix` is the path to the attention module
inside yours ("" when you test the attention module itself, "attn." for a child named attn).
`rename` maps further reference keys to yours, e.g. {"q_norm.scale": "q_norm.weight"}.

Shapes: d_in, d_out = H * E (query heads), d_kv = Hkv * E (key/value heads).
"""

from __future__ import annotations

import torch

QKV = ("W_query", "W_key", "W_value")


def _bias_or_zeros(p: dict, key: str, width: int) -> torch.Tensor:
    b = p.get(key)
    return b if b is not None else torch.zeros(width, dtype=torch.float64)


def _finish(out: dict, p: dict, prefix: str, rename: dict | None) -> dict:
    for ref_key, key in (rename or {}).items():
        out[ref_key] = p[prefix + key]
    return out


def _out_proj(out: dict, p: dict, weight: torch.Tensor, bias_key: str) -> dict:
    out["out_proj.weight"] = weight  # (d_out, d_out)
    out["out_proj.bias"] = _bias_or_zeros(p, bias_key, weight.shape[0])
    return out


def fused_c_attn(prefix: str = "", *, qkv: str = "c_attn", proj: str = "c_proj", rename=None):
    """nanoGPT / minGPT: one nn.Linear(d_in, 3 d_out) for q, k, v (in that order), then proj.

    Shapes: {qkv}.weight (3 d_out, d_in) -> 3 x (d_out, d_in); {qkv}.bias (3 d_out,).
    """

    def weight_map(p: dict) -> dict:
        w = p[f"{prefix}{qkv}.weight"]  # (3 d_out, d_in)
        b = _bias_or_zeros(p, f"{prefix}{qkv}.bias", w.shape[0])  # (3 d_out,)
        out = {}
        for name, w_part, b_part in zip(QKV, w.chunk(3, dim=0), b.chunk(3)):
            out[f"{name}.weight"], out[f"{name}.bias"] = w_part, b_part
        _out_proj(out, p, p[f"{prefix}{proj}.weight"], f"{prefix}{proj}.bias")
        return _finish(out, p, prefix, rename)

    return weight_map


def hf_conv1d(prefix: str = "", *, qkv: str = "c_attn", proj: str = "c_proj", rename=None):
    """Hugging Face GPT-2: Conv1D layers, whose weight is (d_in, d_out), the transpose.

    Shapes: {qkv}.weight (d_in, 3 d_out) -> 3 x (d_out, d_in); {proj}.weight (d_out, d_out)^T.
    """

    def weight_map(p: dict) -> dict:
        w = p[f"{prefix}{qkv}.weight"]  # (d_in, 3 d_out)
        b = _bias_or_zeros(p, f"{prefix}{qkv}.bias", w.shape[1])
        out = {}
        for name, w_part, b_part in zip(QKV, w.chunk(3, dim=1), b.chunk(3)):
            out[f"{name}.weight"], out[f"{name}.bias"] = w_part.T, b_part  # (d_out, d_in)
        _out_proj(out, p, p[f"{prefix}{proj}.weight"].T, f"{prefix}{proj}.bias")
        return _finish(out, p, prefix, rename)

    return weight_map


def mha_in_proj(prefix: str = "", *, rename=None):
    """torch.nn.MultiheadAttention: packed in_proj_weight (or q/k/v_proj_weight when kdim or
    vdim differ), in_proj_bias, out_proj. bias_k / bias_v (add_bias_kv) are not mapped.

    Shapes: in_proj_weight (3 d_out, d_in) -> 3 x (d_out, d_in).
    """

    def weight_map(p: dict) -> dict:
        packed = p.get(f"{prefix}in_proj_weight")
        if packed is not None:
            weights = packed.chunk(3, dim=0)  # (3 d_out, d_in) -> 3 x (d_out, d_in)
        else:
            weights = [p[f"{prefix}{s}_proj_weight"] for s in "qkv"]
        d_out = weights[0].shape[0]
        b = _bias_or_zeros(p, f"{prefix}in_proj_bias", 3 * d_out)
        out = {}
        for name, w_part, b_part in zip(QKV, weights, b.chunk(3)):
            out[f"{name}.weight"], out[f"{name}.bias"] = w_part, b_part
        _out_proj(out, p, p[f"{prefix}out_proj.weight"], f"{prefix}out_proj.bias")
        return _finish(out, p, prefix, rename)

    return weight_map


def separate_qkv(
    prefix: str = "",
    *,
    q: str = "q_proj",
    k: str = "k_proj",
    v: str = "v_proj",
    o: str = "o_proj",
    rename=None,
):
    """Three nn.Linear projections and an output one, under any names (Llama: q_proj, ...).

    Shapes: each weight already (d_out, d_in): a rename, with zeros for absent biases.
    """

    def weight_map(p: dict) -> dict:
        out = {}
        for name, own in zip(QKV, (q, k, v)):
            w = p[f"{prefix}{own}.weight"]
            out[f"{name}.weight"] = w
            out[f"{name}.bias"] = _bias_or_zeros(p, f"{prefix}{own}.bias", w.shape[0])
        _out_proj(out, p, p[f"{prefix}{o}.weight"], f"{prefix}{o}.bias")
        return _finish(out, p, prefix, rename)

    return weight_map


def gqa(
    prefix: str = "",
    *,
    q: str = "q_proj",
    k: str = "k_proj",
    v: str = "v_proj",
    o: str = "o_proj",
    num_heads: int | None = None,
    num_kv_heads: int | None = None,
    rename=None,
):
    """Grouped-query attention (Llama, Qwen): keys and values with fewer heads than queries.

    Against a GroupedQueryAttention reference leave num_heads and num_kv_heads out (a rename).
    Against a multi-head reference (npattn.MultiHeadAttention) give them: each key/value head
    is repeated for its group of query heads, [K1, K1, K2, K2] as repeat_interleave does, and
    its gradient is then the sum over the group.

    Shapes: {k}.weight (d_kv, d_in) -> (d_out, d_in) when expanding, d_kv = Hkv * E.
    """
    base = separate_qkv(prefix, q=q, k=k, v=v, o=o, rename=rename)
    if (num_heads is None) != (num_kv_heads is None):
        raise ValueError("gqa: give both num_heads and num_kv_heads, or neither")

    def weight_map(p: dict) -> dict:
        out = base(p)
        if num_heads is None:
            return out
        group = num_heads // num_kv_heads
        for name in ("W_key", "W_value"):
            w, b = out[f"{name}.weight"], out[f"{name}.bias"]  # (d_kv, d_in), (d_kv,)
            e = w.shape[0] // num_kv_heads
            w = w.reshape(num_kv_heads, e, -1).repeat_interleave(group, dim=0)  # (H, E, d_in)
            out[f"{name}.weight"] = w.reshape(num_heads * e, -1)  # (d_out, d_in)
            b = b.reshape(num_kv_heads, e).repeat_interleave(group, dim=0)
            out[f"{name}.bias"] = b.reshape(num_heads * e)
        return out

    return weight_map
