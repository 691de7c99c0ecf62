"""Each supported transformers attention layer's parameters as npattn.Attention's state_dict.

weight_map(layer) returns a callable {transformers name: tensor} -> {npattn key: tensor} built
from differentiable torch ops (slices, views, transposes), so gradients computed for npattn's
keys pull back to transformers' parameters with torch.autograd.grad. The names are those of
layer.named_parameters(); npattn's keys are W_query / W_key / W_value / out_proj (.weight in
torch's (out, in) layout, .bias), q_norm.scale, k_norm.scale and sinks.

Shape legend: H heads, G key/value heads, E = head_dim, d = hidden_size.
"""

from __future__ import annotations

from .families import config_of, family_of

QKV = ("W_query", "W_key", "W_value")


def _separate(q="q_proj", k="k_proj", v="v_proj", o="o_proj", norms=False, sinks=False):
    """Llama's layout: one nn.Linear per projection, (+ q_norm / k_norm, sinks): renames."""

    def weight_map(p: dict) -> dict:
        out = {}
        for key, name in zip(QKV + ("out_proj",), (q, k, v, o)):
            out[f"{key}.weight"] = p[f"{name}.weight"]  # (out, in), torch's layout already
            if f"{name}.bias" in p:
                out[f"{key}.bias"] = p[f"{name}.bias"]
        if norms:
            out["q_norm.scale"] = p["q_norm.weight"]  # (E,), or (H*E,) / (G*E,) for OLMo 2
            out["k_norm.scale"] = p["k_norm.weight"]
        if sinks:
            out["sinks"] = p["sinks"]  # (H,)
        return _ordered(out)

    return weight_map


def _gpt2(p: dict) -> dict:
    """Conv1D stores (in, out), the transpose of nn.Linear; c_attn is [q | k | v] by columns.

    Shapes: c_attn.weight (d, 3d) -> 3 x (d, d)^T; c_attn.bias (3d,); c_proj.weight (d, d)^T.
    """
    w, b = p["c_attn.weight"], p["c_attn.bias"]  # (d, 3d), (3d,)
    out = {}
    for key, w_part, b_part in zip(QKV, w.chunk(3, dim=1), b.chunk(3)):
        out[f"{key}.weight"], out[f"{key}.bias"] = w_part.T, b_part  # (d, d): (out, in)
    out["out_proj.weight"], out["out_proj.bias"] = p["c_proj.weight"].T, p["c_proj.bias"]
    return _ordered(out)


def _gpt_neox(num_heads: int):
    """query_key_value is head-major: its 3d rows are, per head h, [q_h; k_h; v_h] (E each).

    Shapes: query_key_value.weight (3d, d) -> (H, 3, E, d) -> 3 x (H*E, d); bias (3d,)
    -> (H, 3, E) -> 3 x (H*E,); dense -> out_proj.
    """

    def weight_map(p: dict) -> dict:
        w = p["query_key_value.weight"]  # (3d, d)
        d_in = w.shape[1]
        w = w.view(num_heads, 3, -1, d_in)  # (H, 3, E, d)
        b = p.get("query_key_value.bias")
        if b is not None:
            b = b.view(num_heads, 3, -1)  # (H, 3, E)
        out = {}
        for i, key in enumerate(QKV):
            out[f"{key}.weight"] = w[:, i].reshape(-1, d_in)  # (H, E, d) -> (H*E, d)
            if b is not None:
                out[f"{key}.bias"] = b[:, i].reshape(-1)  # (H, E) -> (H*E,)
        out["out_proj.weight"] = p["dense.weight"]
        if "dense.bias" in p:
            out["out_proj.bias"] = p["dense.bias"]
        return _ordered(out)

    return weight_map


def _phi3(q_width: int, kv_width: int):
    """qkv_proj stacks [q; k; v] by rows. Shapes: (H*E + 2*G*E, d) -> (H*E, d), 2 x (G*E, d)."""

    def weight_map(p: dict) -> dict:
        w = p["qkv_proj.weight"]  # (H*E + 2 G*E, d)
        parts = w.split([q_width, kv_width, kv_width], dim=0)
        out = {f"{key}.weight": part for key, part in zip(QKV, parts)}
        out["out_proj.weight"] = p["o_proj.weight"]  # (d, H*E)
        return _ordered(out)

    return weight_map


ORDER = ("sinks", "W_query", "W_key", "W_value", "out_proj", "q_norm", "k_norm")


def _ordered(out: dict) -> dict:
    """npattn's state_dict order: the sinks, the projections, the norms."""

    def rank(key: str) -> tuple[int, bool]:
        return ORDER.index(key.split(".")[0]), key.endswith(".bias")  # weight before bias

    return {key: out[key] for key in sorted(out, key=rank)}


def weight_map(layer):
    """A differentiable callable {transformers parameter name: tensor} -> {npattn key: tensor}
    for this layer (see the module docstring); the names are layer.named_parameters()'s."""
    family = family_of(layer)
    if family == "deepseek_v3":
        from .latent import latent_weight_map

        return latent_weight_map(layer)
    config = config_of(layer)
    if family == "gpt2":
        return _gpt2
    if family == "gpt_neox":
        return _gpt_neox(config.num_heads)
    if family == "phi3":
        E = config.head_size
        return _phi3(config.num_heads * E, config.kv_heads * E)
    return _separate(norms=config.qk_norm is not None, sinks=config.sinks)
