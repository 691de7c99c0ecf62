"""The chapter's seeded weights, drawn with torch, so npattn can print the book's numbers.

The chapter builds each class right after `torch.manual_seed(seed)` (123, or 789 for
SelfAttention_v2). Its classes create their layers in the same order as npattn's
(W_query, W_key, W_value, then out_proj; the wrapper's heads one after another), so drawing
the same torch layers in that order under the same seed gives the chapter's exact weights.
tests/test_chapter_weights.py checks this against the book's own classes.

torch is optional: without it, `chapter_module` keeps npattn's own seeded initialisation
(numpy's generator), whose numbers differ from the book's.
"""

from __future__ import annotations

import numpy as np

from ..modules import Linear, Module, SelfAttention_v1
from .data import SEEDS


def torch_available() -> bool:
    """True when torch can be imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "the chapter's seeded weights are drawn with torch: from a clone of npattn, "
            "pip install -c constraints.txt -e '.[torch]', "
            "or pass weights='npattn'"
        ) from e
    return torch


def torch_seeded_state_dict(module: Module, seed: int) -> dict[str, np.ndarray]:
    """The state dict the chapter's torch class of the same shape gets after manual_seed(seed).

    Buffers (the causal `mask`) are copied from `module`: they use no random numbers.
    torch's global generator is left as it was (the draw runs inside torch.random.fork_rng).
    """
    torch = _import_torch()

    sd = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for prefix, m in module.named_modules():
            if isinstance(m, SelfAttention_v1):  # nn.Parameter(torch.rand(d_in, d_out)) x 3
                for name in ("W_query", "W_key", "W_value"):
                    sd[prefix + name] = torch.rand(m.d_in, m.d_out).numpy()
            elif isinstance(m, Linear):  # nn.Linear's kaiming-uniform weight, then bias
                layer = torch.nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
                for name, p in layer.state_dict().items():
                    sd[prefix + name] = p.numpy()
    for key, value in module.state_dict().items():
        sd.setdefault(key, value)  # buffers
    return sd


def chapter_module(cls, *args, weights: str = "auto", **kwargs):
    """Build `cls(*args, **kwargs)` with the chapter's seed; returns (module, source).

    weights="torch" loads the chapter's torch-seeded weights (the book's exact numbers),
    "npattn" keeps npattn's own init seeded the same way, "auto" uses torch when installed.
    source is "torch" or "npattn", whichever was used.
    """
    if weights not in ("auto", "torch", "npattn"):
        raise ValueError(f"weights must be 'auto', 'torch' or 'npattn', got {weights!r}")
    seed = SEEDS[cls.__name__]
    module = cls(*args, rng=seed, **kwargs)
    use_torch = weights == "torch" or (weights == "auto" and torch_available())
    if use_torch:
        module.load_state_dict(torch_seeded_state_dict(module, seed))
    return module, "torch" if use_torch else "npattn"


def chapter_dropout_keep(shape, p: float, weights: str = "auto", seed: int = SEEDS["dropout"]):
    """The keep-mask of the chapter's `torch.manual_seed(123); nn.Dropout(p)(...)`.

    Shapes: -> shape, boolean, True = kept. Returns (keep, source) like chapter_module;
    without torch the mask comes from npattn.functional.dropout_keep_mask(shape, p, seed).
    """
    from ..ops.dropout import dropout_keep_mask

    if weights not in ("auto", "torch", "npattn"):
        raise ValueError(f"weights must be 'auto', 'torch' or 'npattn', got {weights!r}")
    if weights == "npattn" or (weights == "auto" and not torch_available()):
        return dropout_keep_mask(shape, p, seed), "npattn"
    torch = _import_torch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dropped = torch.nn.Dropout(p)(torch.ones(shape))  # kept entries become 1 / (1 - p)
    return dropped.numpy() != 0, "torch"
