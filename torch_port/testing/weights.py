"""From the module's parameters to the reference's, and gradients back the other way.

weight_map is None (the module's names are the reference's), a dict {reference_key:
module_key}, or a callable taking {module_key: tensor} and returning {reference_key: tensor}
in the reference's (torch) layout: any differentiable function of the parameters. The kit
calls it once on float64 copies of the parameters (leaves that require grad) and keeps the
graph. The module's expected gradients are the reference's gradients pulled back through it:

    expected[p] = d/dp  sum_k <mapped[k](params), reference_grad[k]>

so a zero bias the map invents gets no gradient, a key head repeated for several query heads
gets the sum of their gradients, and a product of two projections follows the product rule.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .errors import ConfigurationMismatchError, KitSetupError, UnmappedParameterWarning

# configuration attributes: the reference's name -> names modules commonly use for it
CONFIG_NAMES = {
    "num_heads": ("num_heads", "n_head", "n_heads", "num_attention_heads", "nhead"),
    "num_kv_groups": ("num_kv_groups", "num_key_value_heads", "n_kv_heads", "num_kv_heads"),
    "head_dim": ("head_dim", "head_size"),
    "sliding_window_size": ("sliding_window_size", "sliding_window", "window_size"),
}


def check_configuration(module: torch.nn.Module, reference) -> None:
    """Raise ConfigurationMismatchError when an attribute such as num_heads differs."""
    for ref_name, aliases in CONFIG_NAMES.items():
        want = getattr(reference, ref_name, None)
        if not _is_int(want):  # only what the reference states (a map may expand GQA heads)
            continue
        for path, sub in module.named_modules():
            for alias in aliases:
                have = getattr(sub, alias, None)
                if _is_int(have) and have != want:
                    where = f"{path}.{alias}" if path else alias
                    raise ConfigurationMismatchError(
                        f"configuration mismatch: your module has {where}={have}, the "
                        f"reference npattn.{type(reference).__name__} has {ref_name}={want}; "
                        f"build the reference with {ref_name}={have} (or fix the module)"
                    )


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class MappedWeights:
    """The map applied once to float64 leaves; loads the reference and pulls gradients back.

    Shapes: every entry in the reference's layout; pulled-back gradients in the module's.
    """

    def __init__(self, module: torch.nn.Module, reference, weight_map):
        params = dict(module.named_parameters())
        if not params:
            raise KitSetupError(
                f"{type(module).__name__} has no parameters: the kit copies a module's "
                f"weights into the reference, so give it the module that owns them"
            )
        self.names = list(params)
        self.leaves = {
            k: p.detach().cpu().to(torch.float64).requires_grad_(True) for k, p in params.items()
        }
        self.trainable = {k for k, p in params.items() if p.requires_grad}
        with torch.enable_grad():
            mapped = _apply(weight_map, self.leaves, type(module).__name__)
        ref_sd = reference.state_dict()
        if weight_map is None:  # same names: the reference's keys, the rest stays unread
            mapped = {k: v for k, v in mapped.items() if k in ref_sd}
        ref_params = set(reference.parameters())
        missing = sorted(k for k in ref_params if k not in mapped)
        if missing:
            raise KitSetupError(
                f"weight_map gives no value for the reference's parameters {missing}; your "
                f"module has {sorted(self.names)}. Map each reference key to a tensor (a zero "
                f"tensor for a bias your module does not have)"
            )
        self.mapped = {}
        for key, value in mapped.items():
            if key not in ref_sd:
                if value.requires_grad or bool(value.detach().any()):
                    raise KitSetupError(
                        f"weight_map gives {key!r}, which npattn.{type(reference).__name__} "
                        f"does not have (its keys: {sorted(ref_sd)}); a term your module has "
                        f"and the reference lacks: build the reference with it"
                    )
                continue  # an invented zero for a term the reference does not have
            if tuple(value.shape) != tuple(np.shape(ref_sd[key])):
                raise KitSetupError(
                    f"weight_map[{key!r}] has shape {tuple(value.shape)}, the reference's "
                    f"is {tuple(np.shape(ref_sd[key]))} (torch layout (d_out, d_in)): check "
                    f"the map, or build the reference with your module's sizes"
                )
            self.mapped[key] = value
        self.differentiable = [k for k, v in self.mapped.items() if v.requires_grad]
        self.read = self._read_parameters()

    def _read_parameters(self) -> set:
        """Names of the parameters some mapped entry depends on."""
        if not self.differentiable:
            return set()
        total = sum(self.mapped[k].sum() for k in self.differentiable)
        grads = torch.autograd.grad(
            total, list(self.leaves.values()), allow_unused=True, retain_graph=True
        )
        return {k for k, g in zip(self.leaves, grads) if g is not None}

    def warn_unread(self) -> list[str]:
        """Warn about (and return) the module's parameters the map never reads."""
        unread = sorted(k for k in self.names if k not in self.read and k in self.trainable)
        if unread:
            warnings.warn(
                f"the weight map never reads the parameters {unread}, so they are not "
                f"compared; map them, or freeze them (requires_grad=False) if that is meant",
                UnmappedParameterWarning,
                stacklevel=4,
            )
        return unread

    def warn_frozen(self) -> list[str]:
        """Warn about (and return) the parameters the map reads that do not require grad:
        they shape the output, but their gradients are never compared."""
        frozen = sorted(k for k in self.names if k in self.read and k not in self.trainable)
        if frozen:
            warnings.warn(
                f"the parameters {frozen} are read by the weight map but frozen "
                f"(requires_grad=False), so their gradients are not compared; unfreeze them "
                f"(requires_grad_(True)) to compare them, or ignore this if that is meant",
                UnmappedParameterWarning,
                stacklevel=4,
            )
        return frozen

    def state_dict(self, reference) -> dict:
        """The reference's state_dict with the mapped values (float64 numpy)."""
        sd = dict(reference.state_dict())
        for key, value in self.mapped.items():
            sd[key] = value.detach().numpy().astype(np.float64)
        return sd

    def pull_back(self, ref_grads: dict) -> dict:
        """The module's parameter gradients implied by the reference's: {name: array}.

        Shapes: ref_grads in the reference's layout -> each in the module's parameter's.
        Parameters the map does not read are absent.
        """
        keys = [k for k in self.differentiable if k in ref_grads]
        zeros = {k: np.zeros(tuple(v.shape)) for k, v in self.leaves.items() if k in self.read}
        if not keys:
            return zeros
        total = sum(
            (self.mapped[k] * torch.as_tensor(np.asarray(ref_grads[k], np.float64))).sum()
            for k in keys
        )
        leaves = [self.leaves[k] for k in zeros]
        grads = torch.autograd.grad(total, leaves, allow_unused=True, retain_graph=True)
        return {k: (zeros[k] if g is None else g.numpy()) for k, g in zip(zeros, grads)}


def _apply(weight_map, params: dict, module_name: str) -> dict:
    """weight_map(params) as {reference_key: float64 tensor}; setup errors name the fix."""
    if weight_map is None:
        return dict(params)
    if isinstance(weight_map, dict):
        unknown = {r: u for r, u in weight_map.items() if u not in params}
        if unknown:
            raise KitSetupError(
                f"weight_map maps to {dict(sorted(unknown.items()))}, which {module_name} does "
                f"not have; its parameters are {sorted(params)}"
            )
        return {r: params[u] for r, u in weight_map.items()}
    if not callable(weight_map):
        raise KitSetupError(
            f"weight_map must be None, a dict {{reference_key: your_key}} or a callable, "
            f"got {type(weight_map).__name__}"
        )
    try:
        out = weight_map(params)
    except (KeyError, IndexError, AttributeError, TypeError, ValueError, RuntimeError) as e:
        raise KitSetupError(
            f"weight_map raised {type(e).__name__}: {e}; it is called with {module_name}'s "
            f"parameters {{name: tensor}}, whose names are {sorted(params)}"
        ) from e
    if not hasattr(out, "items"):
        raise KitSetupError(f"weight_map must return a dict, got {type(out).__name__}")
    mapped = {}
    for k, v in out.items():
        if not isinstance(k, str):
            raise KitSetupError(f"weight_map's keys must be the reference's names, got {k!r}")
        if torch.is_tensor(v):
            if v.is_complex() or v.dtype == torch.bool:
                raise KitSetupError(f"weight_map[{k!r}] must hold real numbers, got {v.dtype}")
            mapped[k] = v.to(torch.float64)
            continue
        arr = np.asarray(v) if not isinstance(v, str) else np.asarray(v, dtype=object)
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise KitSetupError(
                f"weight_map[{k!r}] must be a tensor (or array) of numbers, got "
                f"{type(v).__name__} {v!r:.60}"
            )
        mapped[k] = torch.as_tensor(arr, dtype=torch.float64)
    return mapped
