"""assert_hf_attention_matches: a transformers attention layer against npattn, in one line.

    import torch_port.testing as tt
    tt.assert_hf_attention_matches(model.model.layers[0].self_attn)

The reference is torch_port.hf.to_npattn(layer) (npattn.Attention with the layer's settings,
read from its model config) holding the layer's weights through torch_port.hf.weight_map.
The layer is driven as its model drives it: position embeddings from the family's own
rotary module, the 4-D mask from transformers.masking_utils (causal or sliding-window, by
the layer's type), positions and left padding drawn, and decoding through a
transformers.DynamicCache, chunk by chunk. Compared: the output, dL/dx and every parameter
gradient, on the real (unpadded) query rows, with the error model of precision.py at `dtype`.

Shapes: x (B, T, hidden_size); a 2-D attention_mask (B, T) (1 = real, left padding) and
position_ids (B, T) = start + cumsum(mask) - 1 as generate() builds them.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

from . import engine
from .check import check_example, judge_parameters
from .engine import Report, warn_not_reached
from .errors import KitSetupError, Mismatch
from .precision import judge, rule_for
from .setup import build, calling_error, check_sizes, copy_module, module_context, token_plan


@dataclass(frozen=True)
class HFExample:
    """x = default_rng(seed).standard_normal((batch, tokens, hidden)); row b has pads[b]
    padding tokens on the left (none when pads is empty); positions start at `start`; with
    chunks (decoding) the tokens are fed in chunks of those sizes through one cache."""

    batch: int
    tokens: int
    seed: int
    start: int = 0
    pads: tuple = ()
    chunks: tuple = ()

    def __str__(self) -> str:
        text = f"x of shape (B={self.batch}, T={self.tokens}, hidden) from seed {self.seed}"
        if self.start:
            text += f", positions from {self.start}"
        if any(self.pads):
            text += f", left padding {list(self.pads)}"
        if self.chunks:
            text += f", decoded in chunks of {list(self.chunks)} tokens"
        return text


def _family_module(layer):
    return sys.modules.get(type(layer).__module__)


class Driver:
    """Calls a transformers attention layer as its model does (see the module docstring)."""

    def __init__(self, layer):
        import torch_port.hf as tph

        self.family = tph.families.family_of(layer)
        self.config = layer.config
        self.layer_idx = int(getattr(layer, "layer_idx", 0) or 0)
        self.rotary = None
        if self.family != "gpt2":
            name = type(layer).__name__.replace("Attention", "RotaryEmbedding")
            cls = getattr(_family_module(layer), name, None)
            if cls is None:
                raise KitSetupError(
                    f"{type(layer).__name__}'s module defines no {name}, the rotary module "
                    f"its model computes position embeddings with; the kit cannot drive it"
                )
            self.rotary_cls, self.device = cls, next(layer.parameters()).device
            self.rotary_takes_type = "layer_type" in inspect.signature(cls.forward).parameters
            self.reset()
        types = getattr(self.config, "layer_types", None)
        if types:
            self.sliding = types[self.layer_idx] == "sliding_attention"
        else:
            self.sliding = getattr(self.config, "sliding_window", None) is not None

    def reset(self) -> None:
        """A fresh rotary module, as a freshly loaded model has: dynamic NTK's grows its
        tables with the longest sequence it has seen, so each example starts anew."""
        if self.family != "gpt2":
            self.rotary = self.rotary_cls(self.config).to(self.device)

    def new_cache(self):
        import transformers

        return transformers.DynamicCache(config=self.config)

    def __call__(self, layer, x, position_ids, mask2d=None, cache=None):
        """The layer's output (B, T, hidden) for x (B, T, hidden) at position_ids (B, T)."""
        from transformers import masking_utils

        make = (
            masking_utils.create_sliding_window_causal_mask
            if self.sliding
            else masking_utils.create_causal_mask
        )
        mask = make(
            config=self.config,
            inputs_embeds=x,
            attention_mask=mask2d,
            cache=cache,
            position_ids=position_ids,
            layer_idx=self.layer_idx,
        )
        if self.family == "gpt2":
            return layer(x, cache=cache, attention_mask=mask)[0]
        with torch.no_grad():
            if self.rotary_takes_type:
                layer_type = self.config.layer_types[self.layer_idx]
                pe = self.rotary(x, position_ids, layer_type)
            else:
                pe = self.rotary(x, position_ids)
        if self.family == "gpt_neox":
            return layer(x, attention_mask=mask, layer_past=cache, position_embeddings=pe)[0]
        return layer(x, position_embeddings=pe, attention_mask=mask, cache=cache)[0]


def _inputs(ex: HFExample, d: int, dtype):
    """x and the upstream gradient (float64, rounded to dtype), the 2-D mask or None,
    position_ids (B, T) and the real query rows (B, T) boolean."""
    rng = np.random.default_rng(ex.seed)
    x = torch.from_numpy(rng.standard_normal((ex.batch, ex.tokens, d))).to(dtype).double()
    g = torch.from_numpy(rng.standard_normal((ex.batch, ex.tokens, d))).to(dtype).double()
    pads = ex.pads or (0,) * ex.batch
    mask = (torch.arange(ex.tokens)[None, :] >= torch.tensor(pads)[:, None]).long()  # (B, T)
    position_ids = (ex.start + mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    mask2d = mask if any(pads) else None
    return x.numpy(), g.numpy(), mask2d, position_ids, mask.bool().numpy()


def _np(t) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _rows(a: np.ndarray, real: np.ndarray) -> np.ndarray:
    """a (B, T, ...) with the padded query rows set to 0 (what is compared)."""
    return np.where(real[..., None], a, 0.0)


class _Twin:
    """The plain yardstick at the checked dtype, with positions and key padding: torch_port's
    twin of the reference, or the reference itself at that dtype; nothing in float64."""

    def __init__(self, setup):
        from .setup import NumpyAtDtype, TorchTwin

        self.kind = None
        if isinstance(setup.plain, TorchTwin):
            self.kind, self.model = "torch", setup.plain.model
        elif isinstance(setup.plain, NumpyAtDtype):
            self.kind, self.model = "numpy", setup.plain.model
            self.np_dtype = setup.plain.np_dtype
        self.dtype, self.device = setup.dtype, setup.device

    def reset(self):
        if self.kind is not None:
            self.model.reset_cache()

    def run(self, x64, g64, positions, kpm, backward, use_cache=False):
        if self.kind is None:
            return None, None, None
        m = self.model
        if self.kind == "numpy":
            x = x64.astype(self.np_dtype)
            y = m.forward(x, use_cache, positions=positions.numpy(), key_padding_mask=kpm)
            if not backward:
                return y.astype(np.float64), None, None
            dx = m.backward(g64.astype(self.np_dtype))
            grads = {k: g.astype(np.float64) for k, g in m.grads.items()}
            return y.astype(np.float64), dx.astype(np.float64), grads
        x = torch.tensor(x64, dtype=self.dtype, device=self.device)
        kw = dict(positions=positions.to(self.device))
        if kpm is not None:
            kw["key_padding_mask"] = torch.as_tensor(kpm, device=self.device)
        if not backward:
            with torch.no_grad():
                return _np(m(x, use_cache=use_cache, **kw)), None, None
        m.zero_grad(set_to_none=True)
        x.requires_grad_(True)
        y = m(x, **kw)
        y.backward(torch.tensor(g64, dtype=self.dtype, device=self.device))
        grads = {k: _np(p.grad) for k, p in m.named_parameters() if p.grad is not None}
        return _np(y), _np(x.grad), grads


def run_forward(setup, driver, twin, ex: HFExample, check_backward: bool):
    """Judgements of one full-forward example (output, dx, parameter gradients)."""
    x64, g64, mask2d, position_ids, real = _inputs(ex, setup.d_in, setup.dtype)
    g64 = _rows(g64, real)  # the padded rows' outputs are not compared: no gradient from them
    kpm = None if mask2d is None else mask2d.bool().numpy()
    setup.ref.reset_cache()
    driver.reset()
    y_ref = setup.ref.forward(x64, positions=position_ids.numpy(), key_padding_mask=kpm)
    x = torch.tensor(x64, dtype=setup.dtype, device=setup.device)
    setup.user.zero_grad(set_to_none=True)
    dev = setup.device
    try:
        with torch.set_grad_enabled(check_backward):
            x.requires_grad_(check_backward)
            y = driver(
                setup.user, x, position_ids.to(dev), None if mask2d is None else mask2d.to(dev)
            )
    except KitSetupError:
        raise
    except Exception as e:
        if calling_error(e, Driver.__call__, module=setup.user):
            raise KitSetupError(
                f"{type(setup.user).__name__} cannot be called as its model calls it "
                f"({type(e).__name__}: {e}); is it an unmodified transformers attention layer?"
            ) from e
        return [], Mismatch("exception", ex, (), float("inf"), f"{type(e).__name__}: {e}")
    twin.reset()
    plain = twin.run(x64, g64, position_ids, kpm, check_backward)
    judgements = []

    def check(quantity, got, truth, plain_value, scale=None):
        j, found = judge(quantity, got, truth, plain_value, setup.rule, ex, scale)
        judgements.append(j)
        return found

    plain_out = None if plain[0] is None else _rows(plain[0], real)
    found = check("output", _rows(_np(y), real), _rows(y_ref, real), plain_out)
    if found:
        return judgements, found
    mask = None if mask2d is None else mask2d.to(dev)
    for quantity, train, grad in other_modes(setup, check_backward):
        setup.user.train(train)
        try:
            driver.reset()
            with torch.set_grad_enabled(grad):
                y_other = driver(setup.user, x.detach(), position_ids.to(dev), mask)
        except Exception as e:
            detail = f"{type(e).__name__}: {e}"
            return judgements, Mismatch(quantity, ex, (), float("inf"), detail)
        finally:
            setup.user.eval()
        found = check(quantity, _rows(_np(y_other), real), _rows(y_ref, real), plain_out)
        if found:
            return judgements, found
    if not check_backward:
        return judgements, found
    dx_ref = setup.ref.backward(g64)
    y.backward(torch.tensor(g64, dtype=y.dtype, device=y.device))
    dx = _np(x.grad) if x.grad is not None else np.zeros_like(x64)
    found = check("dx", dx, dx_ref, plain[1])
    if found:
        return judgements, found
    return judgements, judge_parameters(setup, check, setup.ref.grads, plain[2])


def other_modes(setup, check_backward: bool) -> list:
    """(quantity, train, grad) for the forwards run besides the main one: under
    torch.no_grad() when the main one had autograd on, and in train mode unless the layer
    has active dropout (config.attention_dropout > 0, ...)."""
    runs = [("output under torch.no_grad()", False, False)] if check_backward else []
    if not setup.dropout:
        runs.append(("output in train mode", True, check_backward))
    return runs


def run_decode(setup, driver, twin, ex: HFExample):
    """Judgements of one decoding example: every chunk's output on the real rows."""
    x64, _, mask2d, position_ids, real = _inputs(ex, setup.d_in, setup.dtype)
    setup.ref.reset_cache()
    twin.reset()
    driver.reset()
    cache = driver.new_cache()
    judgements, start = [], 0
    for i, n in enumerate(ex.chunks):
        end = start + n
        chunk = x64[:, start:end]  # (B, n, hidden)
        sub = None if mask2d is None else mask2d[:, :end]
        kpm = None if sub is None else sub.bool().numpy()
        pos = position_ids[:, start:end]
        y_ref = setup.ref.forward(
            chunk, use_cache=True, positions=pos.numpy(), key_padding_mask=kpm
        )
        x = torch.tensor(chunk, dtype=setup.dtype, device=setup.device)
        dev = setup.device
        try:
            with torch.no_grad():
                y = driver(setup.user, x, pos.to(dev), None if sub is None else sub.to(dev), cache)
        except Exception as e:
            detail = f"{type(e).__name__}: {e}"
            return judgements, Mismatch(f"step {i}", ex, (), float("inf"), detail)
        plain = twin.run(chunk, None, pos, kpm, False, use_cache=True)[0]
        rows = real[:, start:end]
        quantity = f"step {i} output (tokens {start}..{end - 1})"
        j, found = judge(
            quantity,
            _rows(_np(y), rows),
            _rows(y_ref, rows),
            None if plain is None else _rows(plain, rows),
            setup.rule,
            ex,
        )
        judgements.append(j)
        if found:
            return judgements, found
        start = end
    return judgements, None


def _prepare(layer, dtype, rule):
    try:
        import torch_port.hf as tph
    except ImportError as e:  # pragma: no cover - transformers-free installs
        raise KitSetupError(f"torch_port.hf is needed: {e}") from e
    if not isinstance(layer, torch.nn.Module) or not hasattr(layer, "config"):
        raise KitSetupError(
            f"layer must be a transformers attention layer (e.g. "
            f"model.model.layers[0].self_attn, which keeps its model's config), got "
            f"{type(layer).__name__}; for your own module use assert_matches_reference"
        )
    try:
        reference = tph.to_npattn(layer)
        weight_map = tph.weight_map(layer)
    except tph.UnsupportedLayerError as e:
        raise KitSetupError(
            f"{e}; for another layer, build the npattn reference yourself and call "
            f"assert_matches_reference(layer, reference, weight_map, forward=...)"
        ) from e
    except (AttributeError, TypeError, ValueError, KeyError) as e:
        raise KitSetupError(
            f"torch_port.hf cannot convert {type(layer).__name__} ({type(e).__name__}: {e}); "
            f"build the npattn reference yourself and call assert_matches_reference"
        ) from e
    # the layer's training flag drives dropout: a copy in eval mode is what is checked
    layer = copy_module(layer).eval()
    setup = build(layer, reference, weight_map, None, dtype, rule, check_backward=True)
    return setup, Driver(setup.user)


def compare_hf(layer, example: HFExample, *, dtype=torch.float32, check_backward=True,
               rtol=None, atol=None, factor=None, floor=None):  # fmt: skip
    """One HFExample (a full forward, or decoding when it has chunks): the first
    disagreement as a Mismatch, or None."""
    rule = rule_for(dtype, factor=factor, floor=floor, rtol=rtol, atol=atol)
    setup, driver = _prepare(layer, dtype, rule)
    check_example(example, setup.context_length)
    twin = _Twin(setup)
    if example.chunks:
        return run_decode(setup, driver, twin, example)[1]
    return run_forward(setup, driver, twin, example, check_backward)[1]


def assert_hf_attention_matches(
    layer,
    *,
    dtype=torch.float32,
    check_backward: bool = True,
    decode: bool = True,
    max_examples: int = 20,
    seed: int = 0,
    max_batch: int = 2,
    max_tokens: int | None = None,
    rtol=None,
    atol=None,
    factor=None,
    floor=None,
) -> Report:
    """Raise ReferenceMismatchError unless the transformers attention `layer` computes what
    npattn computes for its configuration (see the module docstring).

    dtype: the layer is copied and cast to it (float32 by default: transformers computes
    its softmax, RMSNorm and RoPE angles in float32 whatever the dtype, so a float64 check
    of an unmodified layer fails at float32 rounding level). Token counts reach past the
    layer's window; positions start anywhere in 0..2 * max_tokens; rows are left-padded.
    decode: also decode through a DynamicCache in drawn chunks. A layer the kit cannot
    drive raises KitSetupError saying what to do instead. Returns a Report.
    """
    __tracebackhide__ = True
    check_sizes(max_examples=max_examples, seed=seed, max_batch=max_batch, max_tokens=max_tokens)
    rule = rule_for(dtype, factor=factor, floor=floor, rtol=rtol, atol=atol)
    setup, driver = _prepare(layer, dtype, rule)
    report = Report(unread=tuple(setup.weights.warn_unread()), sizes=setup.sizes)
    if check_backward:
        report.frozen = tuple(setup.weights.warn_frozen())
    if setup.dropout:
        report.not_run = (
            f"the forward in train mode: the layer has active dropout "
            f"({', '.join(setup.dropout)}); it runs in eval mode only",
        )
    max_tokens, boundaries, longer, report.not_reached, unchecked = token_plan(
        setup.sizes, max_tokens, module_context(setup.user)
    )
    report.max_tokens, report.boundaries = max_tokens, tuple(boundaries)
    report.longer, report.unchecked = tuple(longer), unchecked
    warn_not_reached(report.not_reached, max([max_tokens, *boundaries, *longer]), unchecked)
    search = engine.Search(max_examples=max_examples, seed=seed)
    for decoding in (False, True) if decode else (False,):
        case = HFCase(layer, setup, driver, check_backward, seed, max_batch, decoding)
        case.report = report  # one report for both searches
        engine.check(case, search)
    return report


class HFCase(engine.Case):
    """assert_hf_attention_matches's case: HFExamples, full forwards or decoding."""

    def __init__(self, layer, setup, driver, check_backward, seed, max_batch, decoding):
        self.layer, self.setup, self.driver, self.twin = layer, setup, driver, _Twin(setup)
        self.check_backward, self.seed, self.max_batch = check_backward, seed, max_batch
        self.decoding = decoding

    def examples(self):
        max_batch, max_tokens, decoding = self.max_batch, self.report.max_tokens, self.decoding

        @st.composite
        def draw_example(draw):
            batch = draw(st.integers(1, max_batch))
            tokens = draw(st.integers(1, max_tokens))
            padded = draw(st.booleans())
            pads = tuple(draw(st.integers(0, tokens - 1)) for _ in range(batch)) if padded else ()
            start = 0 if padded else draw(st.integers(0, 2 * max_tokens))
            chunks = ()
            if decoding:
                sizes = draw(st.lists(st.integers(1, tokens), min_size=1, max_size=tokens))
                kept, total = [], 0
                for n in sizes:
                    n = min(n, tokens - total)
                    if n < 1:
                        break
                    kept.append(n)
                    total += n
                if total < tokens:
                    kept.append(tokens - total)
                chunks = tuple(kept)
            seed = draw(st.integers(0, 2**32 - 1))
            return HFExample(batch, tokens, seed, start, pads, chunks)

        return draw_example()

    def run(self, example):
        if self.decoding:
            return run_decode(self.setup, self.driver, self.twin, example)
        return run_forward(self.setup, self.driver, self.twin, example, self.check_backward)

    def _at(self, tokens: int) -> HFExample:
        """batch 1, from seed, no padding; decoding: a prefill of tokens - 1, then one."""
        if not self.decoding:
            return HFExample(1, tokens, self.seed)
        return HFExample(1, tokens, self.seed, chunks=(tokens - 1, 1) if tokens > 1 else (1,))

    def probe(self):
        """One token; a layer that raises even there cannot be driven: KitSetupError."""
        example = self._at(1)
        found = self.run(example)[1]
        if found is not None and found.error == float("inf") and not found.shape:
            raise KitSetupError(
                f"{type(self.layer).__name__} raises when called as its model calls it, on "
                f"one token ({found.detail}); if its attention implementation refuses a "
                f"setting, set layer.config._attn_implementation = 'eager'"
            )
        return example

    def ladder(self):
        return [self._at(t) for t in sorted({*self.report.boundaries, *self.report.longer})]

    def between(self, passed, failed):
        low = passed.tokens if passed else 0
        return [self._at(t) for t in range(low + 1, failed.tokens)]

    def message(self, mismatch):
        what = "decode" if self.decoding else "compute"
        dtype = self.setup.dtype
        return (
            f"{type(self.layer).__name__} (layer {self.driver.layer_idx}) does not {what} "
            f"like npattn.{type(self.setup.ref).__name__} of its configuration "
            f"({str(dtype).replace('torch.', '')}): {mismatch}\n"
            f"replay: import torch, torch_port.testing; torch_port.testing.compare_hf("
            f"layer, torch_port.testing.{mismatch.example!r}, dtype={dtype})"
        )
