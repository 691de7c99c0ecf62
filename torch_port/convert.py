"""Moving the chapter's modules between npattn and torch: same class, same weights, same dtype.

    ref = torch_port.to_npattn(torch_module)    # npattn module, arrays copied to the CPU
    mod = torch_port.from_npattn(npattn_module)  # torch_port module, tensors copied
    torch_port.save_safetensors(mod, "w.safetensors")
    npattn.io.load_safetensors(ref, "w.safetensors")   # and the other way round

Conversion goes by class name and state_dict, so to_npattn also takes the book's own classes.
The constructor arguments are read from the state_dict's shapes (and dropout from the
nn.Dropout modules), never guessed.
"""

from __future__ import annotations

import numpy as np
import torch

import npattn
from npattn.io import WeightFileError, check_path

from . import modules

CHAPTER_CLASSES = (
    "SelfAttention_v1",
    "SelfAttention_v2",
    "CausalAttention",
    "MultiHeadAttentionWrapper",
    "MultiHeadAttention",
)


def _class_name(module) -> str:
    name = type(module).__name__
    if name not in CHAPTER_CLASSES:
        raise TypeError(
            f"module must be one of the chapter's classes {CHAPTER_CLASSES}, got {name}"
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


def _dropout_of(module) -> float:
    """The dropout probability of a torch or npattn chapter module (0.0 for v1/v2)."""
    head = module.heads[0] if type(module).__name__ == "MultiHeadAttentionWrapper" else module
    p = getattr(head, "dropout", 0.0)
    return float(getattr(p, "p", p))  # nn.Dropout in torch, a float in npattn


def _to_numpy(v: torch.Tensor) -> np.ndarray:
    """A numpy copy; bfloat16, which numpy lacks, becomes float32 (exactly)."""
    v = v.detach().cpu()
    return (v.float() if v.dtype == torch.bfloat16 else v).numpy().copy()


def _float_dtype(sd: dict) -> np.dtype:
    """The dtype of a state_dict's first floating array (float32 if none is floating)."""
    return next((a.dtype for a in sd.values() if np.issubdtype(a.dtype, np.floating)), np.float32)


def to_npattn(module: torch.nn.Module, *, rng=None) -> npattn.Module:
    """An npattn module of the same class with the same weights, dtype and train/eval mode.

    Shapes: every array as in module.state_dict() (torch layout). `rng` seeds npattn's dropout.
    bfloat16 weights become float32 (numpy has no bfloat16); the values are unchanged.
    A module that has a chapter class's name but not its state_dict raises TypeError.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(
            f"module must be a torch.nn.Module (to_npattn converts torch to npattn), got "
            f"{type(module).__name__}"
        )
    name = _class_name(module)
    sd = {k: _to_numpy(v) for k, v in module.state_dict().items()}
    num_heads = getattr(module, "num_heads", None)
    try:
        args = _args(name, sd, _dropout_of(module), num_heads)
        new = getattr(npattn, name)(*args, rng=rng).astype(_float_dtype(sd))
        new.load_state_dict(sd)  # strict about keys and shapes
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise TypeError(
            f"module is named {name} but is not the chapter's {name}: its state_dict "
            f"{ {k: tuple(v.shape) for k, v in sd.items()} } does not fit ({e!r})"
        ) from e
    return new.train(module.training)


def from_npattn(module: npattn.Module, *, device=None) -> torch.nn.Module:
    """A torch_port module of the same class with the same weights, dtypes and mode.

    Shapes: every tensor as in module.state_dict(). `device` defaults to the CPU.
    """
    if not isinstance(module, npattn.Module):
        raise TypeError(
            f"module must be an npattn module (from_npattn converts npattn to torch), got "
            f"{type(module).__name__}"
        )
    name = _class_name(module)
    sd = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in module.state_dict().items()}
    num_heads = getattr(module, "num_heads", None)
    new = getattr(modules, name)(*_args(name, sd, _dropout_of(module), num_heads))
    new.load_state_dict(sd, assign=True)  # assign keeps each tensor's dtype
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
