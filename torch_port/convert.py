"""Moving attention modules between npattn and torch: same class, same weights, same dtype.

    ref = torch_port.to_npattn(torch_module)    # npattn module, arrays copied to the CPU
    mod = torch_port.from_npattn(npattn_module)  # torch_port module, tensors copied
    torch_port.save_safetensors(mod, "w.safetensors")
    npattn.io.load_safetensors(ref, "w.safetensors")   # and the other way round

Conversion goes by class name and state_dict, so to_npattn also takes the book's own classes.
Constructor arguments are read from the state_dict's shapes (and dropout from the nn.Dropout
modules), never guessed. What no shape shows is read from the module's attributes, named as
the constructor arguments: num_heads (head_dim = width / num_heads, and from it
num_kv_groups), sliding_window_size, and Qwen3Attention's rope_base, context_length and
rope_freq_config (a setting kept by no attribute takes the constructor's default, and the
new module's cos/sin tables are then checked against the source's, so nothing is lost
silently). Settings no constructor argument sets, such as a hand-set RMSNorm eps, are copied
submodule by submodule. The real-model layers (Attention, LatentAttention) carry their whole
configuration in `module.config` (an npattn dataclass): they convert as
type(module)(module.config) on the other side plus the state_dict, so every setting is kept.
The book's Qwen3 and Llama 3 attention is also called GroupedQueryAttention but has no
dropout; it converts to Qwen3Attention, and as it keeps no RoPE settings, pass them:
to_npattn(att, rope_base=..., context_length=..., rope_freq_config=...).
"""

from __future__ import annotations

import numpy as np
import torch

import npattn
from npattn.io import WeightFileError, check_path

from . import modern, modules

CHAPTER_CLASSES = (
    "SelfAttention_v1",
    "SelfAttention_v2",
    "CausalAttention",
    "MultiHeadAttentionWrapper",
    "MultiHeadAttention",
)
MODERN_CLASSES = modern.MODERN_CLASSES
CONFIG_CLASSES = ("Attention", "LatentAttention")  # built from module.config alone
ROPE_SETTINGS = ("rope_base", "context_length", "rope_freq_config")


def _class_name(module) -> str:
    name = type(module).__name__
    if name in CONFIG_CLASSES and hasattr(module, "config"):
        return name
    if name == "GroupedQueryAttention" and not hasattr(module, "dropout"):
        return "Qwen3Attention"  # the book's qwen3.py / llama3.py attention
    if name not in CHAPTER_CLASSES + MODERN_CLASSES:
        raise TypeError(
            f"module must be one of the chapter's classes {CHAPTER_CLASSES}, the modern "
            f"ones {MODERN_CLASSES} or the real-model ones {CONFIG_CLASSES}, got {name}"
        )
    return name


def _args(name: str, sd: dict, dropout: float, num_heads: int | None) -> tuple:
    """The chapter's constructor arguments, read from a state_dict's shapes (torch layout)."""
    if name == "SelfAttention_v1":
        return tuple(sd["W_query"].shape)  # W_query (d_in, d_out)
    prefix = "heads.0." if name == "MultiHeadAttentionWrapper" else ""
    d_out, d_in = sd[prefix + "W_query.weight"].shape  # (d_out, d_in)
    qkv_bias = prefix + "W_query.bias" in sd
    if name == "SelfAttention_v2":
        return d_in, d_out, qkv_bias
    context_length = sd[prefix + "mask"].shape[0]  # (context_length, context_length)
    if name == "CausalAttention":
        return d_in, d_out, context_length, dropout, qkv_bias
    if name == "MultiHeadAttentionWrapper":
        num_heads = len({k.split(".")[1] for k in sd if k.startswith("heads.")})
    return d_in, d_out, context_length, dropout, num_heads, qkv_bias


def modern_args(name: str, sd: dict, module, settings: dict | None = None) -> tuple:
    """(args, kwargs) of a modern class's constructor, from shapes and the module's attributes.

    Shapes (torch layout): W_query.weight (H * E, d_in); W_key.weight (G * E, d_in);
    W_DKV.weight (C, d_in). `settings` overrides Qwen3Attention's RoPE attributes.
    """
    d_out, d_in = sd["W_query.weight"].shape  # (H * E, d_in)
    num_heads = _attribute(module, "num_heads")
    head_dim = d_out // num_heads
    qkv_bias = "W_query.bias" in sd
    if name == "MultiHeadLatentAttention":
        latent_dim = sd["W_DKV.weight"].shape[0]  # (C, d_in)
        return (d_in, d_out, _dropout_of(module), num_heads, qkv_bias, latent_dim), {}
    if name == "MultiHeadAttentionWithSWA":
        window = _attribute(module, "sliding_window_size")
        return (d_in, d_out, _dropout_of(module), num_heads, qkv_bias, window), {}
    num_kv_groups = sd["W_key.weight"].shape[0] // head_dim  # (G * E, d_in)
    if getattr(module, "num_kv_groups", num_kv_groups) != num_kv_groups:
        raise ValueError(
            f"num_kv_groups={module.num_kv_groups} disagrees with W_key.weight's "
            f"{sd['W_key.weight'].shape[0]} rows at head_dim {head_dim}"
        )
    if name == "GroupedQueryAttention":
        return (d_in, d_out, _dropout_of(module), num_heads, num_kv_groups, qkv_bias), {}
    rope = {k: getattr(module, k) for k in ROPE_SETTINGS if hasattr(module, k)}
    rope.update(settings or {})
    if "rope_base" not in rope:
        raise TypeError(
            f"{type(module).__name__} keeps no rope_base: pass rope_base= (and "
            "context_length=, rope_freq_config= where they differ from the defaults)"
        )
    qk_norm = "q_norm.scale" in sd
    return (d_in, num_heads, num_kv_groups, head_dim, qk_norm), rope


def _check_rope_tables(source, new) -> None:
    """The converted module's cos/sin tables must be the source's (where it keeps them):
    a setting read from no attribute (e.g. rope_freq_config) would show here."""
    if not hasattr(source, "cos"):
        return  # the book's class keeps its tables in the model
    for table in ("cos", "sin"):
        a, b = _as_numpy(getattr(source, table)), _as_numpy(getattr(new, table))
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-12, atol=1e-12):
            raise ValueError(
                f"the converted module's RoPE {table} table differs from the source's: pass "
                f"the source's {ROPE_SETTINGS} as keyword arguments"
            )


SCALAR_SETTINGS = ("eps", "offset")  # kept by submodules; no constructor argument sets them


def _copy_settings(source, new) -> None:
    """Copy the submodules' scalar settings (a hand-set RMSNorm eps) from source to new,
    module by module, so that a conversion keeps every configuration value."""
    theirs = {p.rstrip("."): m for p, m in source.named_modules()}
    for path, m in new.named_modules():
        src = theirs.get(path.rstrip("."))
        for name in SCALAR_SETTINGS:
            if src is not None and hasattr(src, name) and hasattr(m, name):
                setattr(m, name, float(getattr(src, name)))


def _as_numpy(a) -> np.ndarray:
    return _to_numpy(a) if torch.is_tensor(a) else np.asarray(a)


def _attribute(module, name: str):
    if not hasattr(module, name):
        raise TypeError(f"{type(module).__name__} has no attribute {name!r} to convert with")
    return getattr(module, name)


def _dropout_of(module) -> float:
    """The dropout probability of a torch or npattn chapter module (0.0 for v1/v2)."""
    head = module.heads[0] if type(module).__name__ == "MultiHeadAttentionWrapper" else module
    p = getattr(head, "dropout", 0.0)
    return float(getattr(p, "p", p))  # nn.Dropout in torch, a float in npattn


def _to_numpy(v: torch.Tensor) -> np.ndarray:
    """A numpy copy; bfloat16, which numpy lacks, becomes float32 (exactly)."""
    v = v.detach().cpu()
    return (v.float() if v.dtype == torch.bfloat16 else v).numpy().copy()


def _npattn_class(name: str):
    cls = getattr(npattn, name, None)
    if cls is None:
        raise RuntimeError(f"this version of npattn has no {name} class to convert to")
    return cls


def _check_settings(name: str, settings: dict) -> None:
    if settings and name != "Qwen3Attention":
        raise TypeError(f"keyword arguments {sorted(settings)} apply to Qwen3Attention only")
    unknown = set(settings) - set(ROPE_SETTINGS)
    if unknown:
        raise TypeError(f"unknown keyword arguments {sorted(unknown)}; known: {ROPE_SETTINGS}")


def _float_dtype(sd: dict) -> np.dtype:
    """The dtype of a state_dict's first floating array (float32 if none is floating)."""
    return next((a.dtype for a in sd.values() if np.issubdtype(a.dtype, np.floating)), np.float32)


def to_npattn(module: torch.nn.Module, *, rng=None, **settings) -> npattn.Module:
    """An npattn module of the same class with the same weights, dtype and train/eval mode.

    Shapes: every array as in module.state_dict() (torch layout). `rng` seeds npattn's dropout.
    bfloat16 weights become float32 (numpy has no bfloat16); the values are unchanged.
    settings: rope_base, context_length, rope_freq_config of a Qwen3Attention where the module
    keeps none (the book's class).
    A module that has a class's name but not its state_dict raises TypeError.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(
            f"module must be a torch.nn.Module (to_npattn converts torch to npattn), got "
            f"{type(module).__name__}"
        )
    name = _class_name(module)
    _check_settings(name, settings)
    sd = {k: _to_numpy(v) for k, v in module.state_dict().items()}
    cls = _npattn_class(name)
    if name in CONFIG_CLASSES:  # the config holds every setting; the state_dict the weights
        new = cls(module.config, rng=rng).astype(_float_dtype(sd))
        new.load_state_dict(sd)
        _copy_settings(module, new)
        return new.train(module.training)
    if name in MODERN_CLASSES:  # its own errors name the attribute or setting at fault
        args, kwargs = modern_args(name, sd, module, settings)
    try:
        if name not in MODERN_CLASSES:
            args = _args(name, sd, _dropout_of(module), getattr(module, "num_heads", None))
            kwargs = {}
        new = cls(*args, rng=rng, **kwargs).astype(_float_dtype(sd))
        new.load_state_dict(sd)  # strict about keys and shapes; values take new's dtype
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
        kind = "the chapter's" if name in CHAPTER_CLASSES else "npattn's modern"
        raise TypeError(
            f"module is named {name} but is not {kind} {name}: its state_dict "
            f"{ {k: tuple(v.shape) for k, v in sd.items()} } does not fit ({e!r})"
        ) from e
    if name == "Qwen3Attention":
        _check_rope_tables(module, new)
    _copy_settings(module, new)
    return new.train(module.training)


def from_npattn(module: npattn.Module, *, device=None, **settings) -> torch.nn.Module:
    """A torch_port module of the same class with the same weights, dtypes and mode.

    Shapes: every tensor as in module.state_dict(). `device` defaults to the CPU.
    settings: Qwen3Attention's RoPE settings where the module keeps none as attributes.
    """
    if not isinstance(module, npattn.Module):
        raise TypeError(
            f"module must be an npattn module (from_npattn converts npattn to torch), got "
            f"{type(module).__name__}"
        )
    name = _class_name(module)
    _check_settings(name, settings)
    sd = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in module.state_dict().items()}
    if name in CONFIG_CLASSES:
        import torch_port

        new = getattr(torch_port, name)(module.config)
    elif name in MODERN_CLASSES:
        args, kwargs = modern_args(name, sd, module, settings)
        new = getattr(modern, name)(*args, **kwargs)
        if name == "Qwen3Attention":
            _check_rope_tables(module, new)
    else:
        num_heads = getattr(module, "num_heads", None)
        new = getattr(modules, name)(*_args(name, sd, _dropout_of(module), num_heads))
    new.load_state_dict(sd, assign=True)  # assign keeps each tensor's dtype
    _copy_settings(module, new)
    return new.to(device).train(module.training)


def save_safetensors(module: torch.nn.Module, path, metadata: dict | None = None) -> None:
    """Write module.state_dict() to a .safetensors file (no pickle), readable by npattn.io."""
    from safetensors.torch import save_file

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    path = check_path(path, must_exist=False)
    sd = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    try:
        save_file(sd, path, metadata={"class": type(module).__name__, **(metadata or {})})
    except Exception as e:  # an unwritable path, metadata that is not str -> str
        raise WeightFileError(f"cannot write {path!r} as a safetensors file: {e}") from e


def load_safetensors(module: torch.nn.Module, path) -> torch.nn.Module:
    """Load a .safetensors file (from save_safetensors or npattn.io) into module, strictly.

    Values are cast to the module's dtypes and device, as torch's load_state_dict does: make
    the module float64 first (.double()) to keep float64 weights. Returns the module.
    """
    from safetensors.torch import load_file

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    path = check_path(path, must_exist=True)
    try:
        sd = load_file(path)
    except Exception as e:  # SafetensorError, OSError: all name the file
        raise WeightFileError(f"cannot read {path!r} as a safetensors file: {e}") from e
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # torch's message lists the missing keys and wrong sizes
        raise RuntimeError(
            f"the weights in {path!r} do not fit {type(module).__name__}: {e}"
        ) from e
    return module
