"""Setting a check up: validate the arguments, copy the modules, build the plain yardstick.

Nothing here touches the caller's objects: the module is deep-copied (then cast and put in
eval mode), the reference is deep-copied, made float64 and loaded with the mapped weights.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field

import numpy as np
import torch

import npattn

from .errors import KitSetupError
from .precision import Rule
from .weights import MappedWeights, check_configuration

MAX_TOKENS = 16  # the most tokens drawn when the reference has no longer structural size
LONGEST = 1024  # structural sizes above this are reported, not drawn (pass max_tokens=)


def structural_sizes(reference) -> dict:
    """{what: size} for every length at which the reference's behaviour changes: its window
    (config.window or sliding_window_size), the length its KV cache keeps, its
    context_length, and the tile of its tiled path. Read from the configuration first.

    A module can be right below such a size and wrong past it (no window, a cache one
    position short), so the kit draws token counts and chunks on both sides of each.
    """
    sizes = {}

    def note(what, size):
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0:
            sizes.setdefault(what, int(size))

    for _, m in reference.named_modules():
        config = getattr(m, "config", None)
        note("window", getattr(config, "window", None))
        note("window", getattr(m, "sliding_window_size", None))
        note("context_length", getattr(config, "context_length", None))
        note("context_length", getattr(m, "context_length", None))
        scaling = getattr(getattr(config, "rope", None), "scaling", None)
        if type(scaling).__name__ == "DynamicNTK":  # its tables change past this length
            note("dynamic NTK's original_max_position_embeddings",
                 scaling.original_max_position_embeddings)  # fmt: skip
        limits = getattr(m, "_kv_limits", None)
        if callable(limits):
            window, positions = limits()
            note("cache length", window)
            note("cache positions", positions)
        if getattr(m, "attn_impl", None) == "auto":  # the reference or blocked, then tiled
            from npattn.fast import dispatch
            from npattn.models import Attention, attend

            rule = attend if isinstance(m, Attention) else dispatch  # each class's own switch
            note("auto's switch to tiled", rule.AUTO_TILED_MIN_TOKENS)
        if getattr(m, "attn_impl", None) in ("tiled", "auto"):
            from npattn.fast.tiled import DEFAULT_BLOCKS

            block = getattr(m, "block_size", None) or DEFAULT_BLOCKS
            block = block if isinstance(block, (tuple, list)) else (block, block)
            note("tile rows", block[0])
            note("tile columns", block[1])
    return dict(sorted(sizes.items(), key=lambda kv: (kv[1], kv[0])))


def token_range(sizes: dict, max_tokens: int | None) -> tuple[int, list[int], list[str]]:
    """(most tokens drawn at random, boundary token counts run explicitly, sizes left out).

    Random draws reach past twice every inner size (window, cache length, tile), at least
    MAX_TOKENS, at most the context length. Boundaries: W - 1, W, W + 1 and 2W + 1 for each
    size W, the context length included, up to the context length and LONGEST (or up to
    max_tokens when given, which caps both).
    """
    context = sizes.get("context_length") or sizes.get("cache positions")
    inner = [w for k, w in sizes.items() if k not in ("context_length", "cache positions")]
    if max_tokens is None:
        cap = min(context, LONGEST) if context else LONGEST
        limit = min(max([MAX_TOKENS] + [2 * w + 2 for w in inner if w <= LONGEST]), cap)
    else:
        cap = limit = min(max_tokens, context) if context else max_tokens
    points = set()
    for w in sizes.values():
        points.update((w - 1, w, w + 1, 2 * w + 1))
    boundaries = sorted(t for t in points if 1 <= t <= cap)
    named = {k: w for k, w in sizes.items() if k != "cache positions" or w != context}
    left_out = sorted(f"{k} {w}" for k, w in named.items() if min(w + 1, context or w + 1) > cap)
    return limit, boundaries, left_out


LONGER = (17, 33, 65)  # run explicitly past the random range: an accidental window, a block


MODULE_LENGTHS = ("context_length", "block_size", "max_seq_len", "max_position_embeddings",
                  "n_positions", "n_ctx")  # fmt: skip


def module_context(module) -> int | None:
    """The most tokens the module itself says it takes, or None: the smallest of its
    (or its config's) context_length-like attributes and of its square causal-mask buffers
    (a buffer named like mask, or GPT-2's bias, of shape (..., N, N))."""
    found = []
    for _, m in module.named_modules():
        for owner in (m, getattr(m, "config", None)):
            for name in MODULE_LENGTHS:
                n = getattr(owner, name, None) if owner is not None else None
                if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                    found.append(n)
        for name, b in m.named_buffers(recurse=False):
            if ("mask" in name or name == "bias") and b.dim() >= 2 and b.shape[-1] == b.shape[-2]:
                found.append(int(b.shape[-1]))
    return min(found) if found else None


def token_plan(sizes: dict, max_tokens: int | None, module_limit: int | None = None):
    """token_range, plus the longer token counts run explicitly (LONGER past the random
    range, up to its cap and the module's own context, module_limit) and, in words, the
    token counts up to the largest structural size never run at all ("" when none is).

    Returns (limit, boundaries, longer, left_out, unchecked)."""
    limit, boundaries, left_out = token_range(sizes, max_tokens)
    context = sizes.get("context_length") or sizes.get("cache positions")
    if max_tokens is None:
        cap = min(context, LONGEST) if context else LONGEST
    else:
        cap = min(max_tokens, context) if context else max_tokens
    cap = min(cap, module_limit or cap)
    longer = [t for t in LONGER if limit < t <= cap and t not in boundaries]
    top = context or max([0] + [w + 1 for w in sizes.values()])
    run = set(range(1, limit + 1)) | set(boundaries) | set(longer)
    return limit, boundaries, longer, left_out, spans(t for t in range(1, top + 1) if t not in run)


def spans(counts) -> str:
    """Integers in increasing order as "a..b, c, d..e"."""
    out, first, last = [], None, None
    for t in counts:
        if last is not None and t == last + 1:
            last = t
            continue
        if first is not None:
            out.append(str(first) if first == last else f"{first}..{last}")
        first = last = t
    if first is not None:
        out.append(str(first) if first == last else f"{first}..{last}")
    return ", ".join(out)


def check_sizes(**sizes) -> None:
    """Raise KitSetupError naming the argument unless each is None or a positive int (seed:
    a non-negative int)."""
    for name, value in sizes.items():
        least = 0 if name == "seed" else 1
        optional = name in ("max_tokens", "max_chunk", "max_head_dim")
        if value is None and optional:
            continue
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise KitSetupError(
                f"{name} must be an int >= {least}{' (or None)' if optional else ''}, got {value!r}"
            )


def check_device(device) -> torch.device:
    """torch.device(device), refusing (KitSetupError) a device that holds no data (meta)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise KitSetupError(f"device must be a torch device such as 'cpu' or 'cuda': {e}") from e
    if device.type == "meta":
        raise KitSetupError(
            "device='meta' holds no numbers to compare; pass device='cpu' or 'cuda'"
        )
    return device


def default_forward(module, x):
    return module(x)


def takes_positions(forward, reference) -> bool:
    """Whether both the forward adapter and the reference's forward take positions and
    key_padding_mask as keywords: then the kit draws positions and left padding."""
    names = ("positions", "key_padding_mask")
    try:
        ours = inspect.signature(forward).parameters
        theirs = inspect.signature(reference.forward).parameters
    except (TypeError, ValueError):
        return False
    return all(n in ours for n in names) and all(n in theirs for n in names)


def check_forward(forward):
    """forward as a callable (module, x) -> Tensor; None means module(x)."""
    if forward is None:
        return default_forward
    if not callable(forward):
        raise KitSetupError(f"forward must be a callable (module, x) -> Tensor, got {forward!r}")
    try:
        inspect.signature(forward).bind(None, None)
    except TypeError:
        raise KitSetupError(
            f"forward must take two arguments (module, x) and return the output tensor, "
            f"e.g. forward=lambda m, x: m(x)[0]; got a callable with signature "
            f"{inspect.signature(forward)}"
        ) from None
    except ValueError:  # no signature to inspect (a builtin): let it run
        pass
    return forward


def calling_error(e: BaseException, *callers, module=None) -> bool:
    """True when e is a TypeError raised by the call itself (the arguments do not fit the
    callee's signature), not by code inside the callee: the innermost frame of its
    traceback is then a caller (one of `callers`' code) or torch's Module.__call__ on
    `module` itself (a submodule called wrongly inside your forward is a bug, not setup)."""
    if not isinstance(e, TypeError) or e.__traceback__ is None:
        return False
    tb = e.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    codes = {getattr(c, "__code__", c) for c in callers}
    if frame.f_code in codes:
        return True
    in_torch_call = frame.f_code.co_name in ("_call_impl", "_wrapped_call_impl")
    return in_torch_call and module is not None and frame.f_locals.get("self") is module


def call_setup_error(e: BaseException, what: str, hint: str) -> KitSetupError:
    return KitSetupError(
        f"{what} cannot be called the way the kit calls it ({type(e).__name__}: {e}); {hint}"
    )


def check_modules(module, reference) -> None:
    if not isinstance(reference, npattn.Module):
        raise KitSetupError(
            f"reference must be an npattn module (e.g. npattn.MultiHeadAttention(...)), got "
            f"{type(reference).__name__}"
        )
    if not isinstance(module, torch.nn.Module):
        raise KitSetupError(
            f"module must be a torch.nn.Module, the one that owns the weights, got "
            f"{type(module).__name__} {getattr(module, '__name__', '')!s}; "
            f"for an SDPA-like function use torch_port.testing.assert_sdpa_matches"
        )


def as_tensor_output(y, what: str = "forward(module, x)") -> torch.Tensor:
    """The output tensor, or a KitSetupError saying how to adapt the call."""
    if torch.is_tensor(y):
        return y
    hint = "forward=lambda m, x: m(x)[0]" if isinstance(y, (tuple, list)) else "forward="
    raise KitSetupError(
        f"{what} must return a tensor, got {type(y).__name__}; pass {hint} to pick it out"
    )


def _table_tolerance(a) -> float:
    dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.float64
    return 4 * float(np.finfo(dtype).eps)


def check_reference_tables(reference) -> list:
    """Refuse (KitSetupError) a reference whose fixed tables are not what its configuration
    makes: the chapter's causal `mask` buffer (triu(ones(context_length), 1)), Qwen3's RoPE
    cos and sin (from head_dim, rope_base, context_length, rope_freq_config), and any buffer
    of a module built from a `config`. A reference edited by hand would otherwise be the
    truth. Returns [(module, name, exact table)] for the tables to install in float64."""
    from npattn.modules._input import chapter_mask
    from npattn.ops.rope import compute_rope_params

    modified, exact = [], []
    for path, m in reference.named_modules():
        where = f"{path}" if path else ""
        context = getattr(m, "context_length", None)
        if "mask" in getattr(m, "_buffer_names", ()) and isinstance(context, int):
            have, want = np.asarray(m.mask), chapter_mask(context)
            if have.shape != want.shape or not np.array_equal(have != 0, want != 0):
                modified.append(
                    f"{where}mask (the causal mask buffer; context_length={context} makes "
                    f"triu(ones({context}, {context}), 1))"
                )
        if all(hasattr(m, a) for a in ("cos", "sin", "rope_base", "head_dim", "context_length")):
            tables = compute_rope_params(
                m.head_dim, m.rope_base, m.context_length, getattr(m, "rope_freq_config", None)
            )
            for name, want in zip(("cos", "sin"), tables):
                have = np.asarray(getattr(m, name))
                same = have.shape == want.shape and np.allclose(
                    have.astype(np.float64), want, rtol=0.0, atol=_table_tolerance(have)
                )
                if not same:
                    modified.append(
                        f"{where}{name} (the RoPE table; rope_base={m.rope_base}, "
                        f"context_length={m.context_length}, head_dim={m.head_dim} and "
                        f"rope_freq_config={getattr(m, 'rope_freq_config', None)} make another)"
                    )
                exact.append((m, name, want))
        config = getattr(m, "config", None)
        if config is not None and getattr(m, "_buffer_names", None):
            try:
                fresh = type(m)(config)
            except Exception:  # not rebuilt from its config alone: nothing to compare
                fresh = None
            for name in m._buffer_names if fresh is not None else ():
                have, want = np.asarray(getattr(m, name)), np.asarray(getattr(fresh, name))
                if have.shape != want.shape or not np.allclose(
                    have.astype(np.float64), want, rtol=0.0, atol=_table_tolerance(have)
                ):
                    modified.append(f"{where}{name} (a buffer its config makes otherwise)")
    if modified:
        raise KitSetupError(
            f"the reference npattn.{type(reference).__name__} was modified after it was "
            f"built: {', '.join(sorted(modified))}. The kit trusts only what the reference's "
            f"configuration makes; build a new reference with the settings you want"
        )
    return exact


def reference_float64(reference, weights: MappedWeights):
    """A float64 copy of the reference, holding the module's weights, in eval mode; its
    tables checked against its configuration and recomputed in float64."""
    exact = {(id(m), name): table for m, name, table in check_reference_tables(reference)}
    ref = copy.deepcopy(reference).eval()
    for (_, src), (_, new) in zip(reference.named_modules(), ref.named_modules()):
        for name in ("cos", "sin"):
            table = exact.get((id(src), name))
            if table is not None and name in vars(new):  # stored, not derived from a config
                object.__setattr__(new, name, table.copy())
    if hasattr(ref, "astype"):
        ref.astype(np.float64)  # buffers too (e.g. RoPE tables), so the truth is float64
    try:
        ref.load_state_dict(weights.state_dict(ref))
    except (KeyError, ValueError, TypeError) as e:
        raise KitSetupError(f"the mapped weights do not load into the reference: {e}") from e
    return ref


def numpy_dtype(dtype):
    return {torch.float32: np.float32, torch.float16: np.float16}.get(dtype)


class TwinDisagreesError(ValueError):
    """torch_port's twin does not compute the reference's function (a lost setting)."""


class TorchTwin:
    """torch_port's class of the reference's name, at the module's dtype: plain torch ops.

    Before it serves as the yardstick, the twin is run in float64 beside the reference on a
    probe input: a twin that lost a setting in conversion (an eps, a table) would otherwise
    make every error at the dtype look normal. It raises TwinDisagreesError then.
    """

    def __init__(self, ref64, dtype, device):
        import torch_port

        twin = torch_port.from_npattn(ref64).to(device=device, dtype=torch.float64).eval()
        check_twin(twin, ref64, device)
        self.model = twin.to(dtype=dtype)
        self.dtype, self.device = dtype, device

    def run(self, x64, g64, backward: bool, **kw):
        """(out, dx, grads) as float64 numpy; grads keyed like the reference's parameters.
        kw: positions and key_padding_mask (numpy), passed on as tensors."""
        x = torch.tensor(x64, dtype=self.dtype, device=self.device)
        kw = {k: torch.as_tensor(v, device=self.device) for k, v in kw.items() if v is not None}
        self.model.zero_grad(set_to_none=True)
        if not backward:
            with torch.no_grad():
                return _np(self.model(x, **kw)), None, None
        x.requires_grad_(True)
        y = self.model(x, **kw)
        y.backward(torch.tensor(g64, dtype=self.dtype, device=self.device))
        grads = {k: _np(p.grad) for k, p in self.model.named_parameters() if p.grad is not None}
        return _np(y), _np(x.grad), grads


def check_twin(twin, ref64, device) -> None:
    """Raise TwinDisagreesError unless twin (float64) gives the reference's output on a probe."""
    d_in = getattr(ref64, "d_in", None)
    if d_in is None:
        d_in = getattr(getattr(ref64, "config", None), "hidden_size", None)
    if not isinstance(d_in, int):
        raise TwinDisagreesError("the reference has no d_in to probe with")
    context = structural_sizes(ref64).get("context_length", 4)
    x = np.random.default_rng(0).standard_normal((1, min(4, context), d_in))
    probe = copy.deepcopy(ref64)
    if hasattr(probe, "reset_cache"):
        probe.reset_cache()
    want = probe(x)
    with torch.no_grad():
        got = _np(twin(torch.tensor(x, dtype=torch.float64, device=device)))
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-9, atol=1e-12):
        raise TwinDisagreesError(
            f"torch_port's {type(twin).__name__} converted from the reference does not "
            f"compute its function in float64"
        )


class NumpyAtDtype:
    """The npattn reference itself computed at the module's dtype (float32 or float16)."""

    def __init__(self, ref64, np_dtype):
        self.model = copy.deepcopy(ref64).astype(np_dtype)
        self.np_dtype = np_dtype

    def run(self, x64, g64, backward: bool, **kw):
        kw = {k: v for k, v in kw.items() if v is not None}
        y = self.model(x64.astype(self.np_dtype), **kw)
        if not backward:
            return y.astype(np.float64), None, None
        dx = self.model.backward(g64.astype(self.np_dtype))
        grads = {k: g.astype(np.float64) for k, g in self.model.grads.items()}
        return y.astype(np.float64), dx.astype(np.float64), grads


def plain_yardstick(ref64, dtype, device, rule: Rule):
    """What the error model compares with: torch_port's twin of the reference when it has one,
    else the reference computed at the dtype; None when the rule needs none (float64)."""
    if not rule.needs_plain:
        return None
    try:
        return TorchTwin(ref64, dtype, device)
    except (TypeError, KeyError, ValueError, AttributeError):
        pass  # no torch_port twin for this class, or one that computes something else
    np_dtype = numpy_dtype(dtype)
    if np_dtype is None:
        raise KitSetupError(
            f"{dtype} needs a plain torch twin of npattn.{type(ref64).__name__} as yardstick "
            f"and torch_port has none; check in float32 or float16, or pass rtol and atol"
        )
    return NumpyAtDtype(ref64, np_dtype)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


@dataclass
class Setup:
    """Everything one check needs, built once and reused for every example."""

    user: torch.nn.Module
    forward: object
    weights: MappedWeights
    ref: object
    plain: object
    rule: Rule
    dtype: torch.dtype
    device: torch.device
    d_in: int
    context_length: int | None
    sizes: dict = field(default_factory=dict)
    unread: list = field(default_factory=list)
    dropout: list = field(default_factory=list)  # active dropout: no train-mode forward


DROPOUT_NAMES = ("dropout", "dropout_p", "attn_dropout", "attention_dropout", "attn_pdrop",
                 "resid_pdrop", "dropout_rate")  # fmt: skip


def active_dropout(module) -> list[str]:
    """Where the module would drop something in train mode: dropout submodules with p > 0,
    and float attributes named like a dropout probability (on it or its config) above 0."""
    found = []
    for path, m in module.named_modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0:
            found.append(f"{path or type(m).__name__} (p={m.p})")
            continue
        for owner, where in ((m, path), (getattr(m, "config", None), f"{path}.config")):
            for name in DROPOUT_NAMES if owner is not None else ():
                p = getattr(owner, name, None)
                if isinstance(p, float) and p > 0:
                    found.append(f"{where.strip('.')}.{name}={p}".lstrip("."))
    return sorted(set(found))


def copy_module(module: torch.nn.Module, dtype=None) -> torch.nn.Module:
    """A deep copy of module (cast to dtype), with the hooks registered on its parameters
    (register_hook, register_post_accumulate_grad_hook), which copy.deepcopy drops: a hook
    that changes a gradient is part of what the module computes. KitSetupError when they
    cannot be carried over."""
    user = copy.deepcopy(module)
    if dtype is not None:
        user = user.to(dtype)
    pairs = list(zip(module.parameters(), user.parameters()))
    for (name, p), (_, new) in zip(module.named_parameters(), pairs):
        hooks = list((getattr(p, "_backward_hooks", None) or {}).values())
        after = list((getattr(p, "_post_accumulate_grad_hooks", None) or {}).values())
        try:
            for hook in hooks:
                new.register_hook(hook)
            for hook in after:
                new.register_post_accumulate_grad_hook(hook)
        except RuntimeError as e:
            raise KitSetupError(
                f"the hooks on parameter {name} cannot be carried over to the kit's copy of "
                f"the module ({e}); remove them (or check the module without them)"
            ) from e
    return user


def build(module, reference, weight_map, forward, dtype, rule, check_backward) -> Setup:
    """Validate and copy; raises KitSetupError (or ConfigurationMismatchError) on bad setup."""
    check_modules(module, reference)
    forward = check_forward(forward)
    check_configuration(module, reference)
    trainable = {k for k, p in module.named_parameters() if p.requires_grad}
    user = copy_module(module, dtype).eval()
    if not check_backward:
        user.requires_grad_(False)  # no autograd anywhere: kernels without a backward run
    weights = MappedWeights(user, reference, weight_map)
    weights.trainable = trainable
    ref = reference_float64(reference, weights)
    d_in = getattr(ref, "d_in", None)
    if d_in is None:  # npattn.Attention: the width is the config's hidden_size
        d_in = getattr(getattr(ref, "config", None), "hidden_size", None)
    if not isinstance(d_in, int):
        raise KitSetupError(f"npattn.{type(ref).__name__} has no d_in: the kit cannot draw x")
    params = list(user.parameters())
    device = params[0].device
    sizes = structural_sizes(ref)
    context_length = sizes.get("context_length")
    plain = plain_yardstick(ref, dtype, device, rule)
    setup = Setup(
        user, forward, weights, ref, plain, rule, dtype, device, d_in, context_length, sizes
    )
    setup.dropout = active_dropout(user)
    return setup
