"""assert_matches_reference and its parts: one example compared, and the search for one.

Shapes: x (B, T, d_in) -> output (B, T, d_out) on both sides; dx like x; each parameter
gradient in the module's own layout (the reference's pulled back through the weight map).
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

from . import engine
from .engine import Case, Report, warn_not_reached
from .errors import Example, KitSetupError, Mismatch
from .precision import Judgement, judge, rule_for
from .setup import (
    Setup,
    as_tensor_output,
    build,
    call_setup_error,
    calling_error,
    check_sizes,
    module_context,
    takes_positions,
    token_plan,
)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def draw_input(setup: Setup, example: Example):
    """x and the upstream gradient g, rounded to the module's dtype, as float64 arrays."""
    rng = np.random.default_rng(example.seed)
    x = rng.standard_normal((example.batch, example.tokens, setup.d_in)) * example.scale
    return _round(x, setup.dtype), rng


def _rows(a: np.ndarray, real: np.ndarray) -> np.ndarray:
    """a (B, T, ...) with the padded query rows set to 0 (what is compared)."""
    return np.where(real[..., None], a, 0.0)


def _round(a: np.ndarray, dtype) -> np.ndarray:
    return torch.from_numpy(a).to(dtype).to(torch.float64).numpy()


def positions_and_padding(example: Example):
    """positions (B, T) int64 and key_padding_mask (B, T) bool (None without padding) as
    numpy, and the real rows (B, T); None, None, None for a plain example."""
    if not example.start and not example.pads:
        return None, None, None
    B, T = example.batch, example.tokens
    pads = np.asarray(example.pads or (0,) * B)
    real = np.arange(T)[None, :] >= pads[:, None]  # (B, T), left padding
    positions = np.where(real, example.start + np.cumsum(real, axis=-1) - 1, 1)
    return positions.astype(np.int64), (real if real.size and not real.all() else None), real


def run_example(setup: Setup, example: Example, check_backward: bool):
    """Every judgement on one example (stopping at the first failure), and that failure."""
    x64, rng = draw_input(setup, example)
    positions, kpm, real = positions_and_padding(example)
    kw = {} if positions is None else {"positions": positions, "key_padding_mask": kpm}
    y_ref = setup.ref(x64, **kw)
    g64 = _round(rng.standard_normal(y_ref.shape), setup.dtype)  # random upstream gradient
    if real is not None:  # padded query rows are not compared: no gradient from them
        y_ref, g64 = _rows(y_ref, real), _rows(g64, real)
    x = torch.tensor(x64, dtype=setup.dtype, device=setup.device)
    user_kw = {k: None if v is None else torch.as_tensor(v, device=setup.device)
               for k, v in kw.items()}  # fmt: skip
    setup.user.zero_grad(set_to_none=True)
    try:
        if check_backward:
            x.requires_grad_(True)
            y = as_tensor_output(setup.forward(setup.user, x, **user_kw))
        else:
            with torch.no_grad():
                y = as_tensor_output(setup.forward(setup.user, x, **user_kw))
    except KitSetupError:
        raise
    except Exception as e:  # the module raising is a disagreement too
        if calling_error(e, setup.forward, run_example, module=setup.user):
            raise call_setup_error(
                e,
                f"{type(setup.user).__name__} through forward(module, x)",
                "the kit calls forward(module, x) with x of shape (B, T, d_in); pass forward="
                "lambda m, x: m(x, ...) with whatever else your module's forward needs",
            ) from e
        return [], Mismatch("exception", example, (), float("inf"), f"{type(e).__name__}: {e}")
    plain = (None, None, None)
    if setup.plain:
        plain = setup.plain.run(x64, g64, check_backward, **kw)
        if real is not None:
            plain = (_rows(plain[0], real), *plain[1:])
    leak = output_leak(y, setup)
    if leak:
        return [], Mismatch("output dtype", example, tuple(y.shape), float("inf"), leak)
    if real is not None:
        y = torch.where(torch.as_tensor(real, device=y.device)[..., None], y, 0.0)
    judgements = []

    def check(quantity, got, truth, plain_value, scale=None):
        j, found = judge(quantity, got, truth, plain_value, setup.rule, example, scale)
        judgements.append(j)
        return found

    found = check("output", _np(y), y_ref, plain[0])
    if found:
        return judgements, found
    for quantity, y_other in other_modes(setup, x, user_kw, check_backward, example):
        if isinstance(y_other, Mismatch):
            return judgements, y_other
        if real is not None:
            y_other = torch.where(torch.as_tensor(real, device=y.device)[..., None], y_other, 0.0)
        found = check(quantity, _np(y_other), y_ref, plain[0])
        if found:
            return judgements, found
    if not check_backward:
        return judgements, found
    dx_ref = setup.ref.backward(g64)
    if not y.requires_grad:
        detail = "the output does not require grad: no gradient reaches x (a detach?)"
        return judgements, Mismatch("dx", example, tuple(dx_ref.shape), float("inf"), detail)
    try:
        y.backward(torch.tensor(g64, dtype=y.dtype, device=y.device))
    except Exception as e:
        return judgements, Mismatch(
            "exception", example, (), float("inf"), f"{type(e).__name__}: {e}"
        )
    dx = _np(x.grad) if x.grad is not None else np.zeros_like(x64)
    found = check("dx", dx, dx_ref, plain[1])
    if found:
        return judgements, found
    return judgements, judge_parameters(setup, check, setup.ref.grads, plain[2])


def output_leak(y: torch.Tensor, setup: Setup) -> str:
    """Why the output's dtype or device is not the input's ("" when it is)."""
    if y.dtype != setup.dtype:
        return (
            f"the output is {y.dtype} for a {setup.dtype} input and module: the module "
            f"computes or returns in another dtype (a .float() or .to() left in)"
        )
    if y.device.type != setup.device.type:
        return f"the output is on {y.device} for an input and module on {setup.device}"
    return ""


def other_modes(setup: Setup, x, user_kw: dict, check_backward: bool, example):
    """The output again in the modes the main run did not use, as (quantity, tensor) (or a
    Mismatch for a raise): under torch.no_grad() when the main run had autograd on, and in
    train mode unless the module has active dropout (setup.dropout)."""
    runs = []
    if check_backward:
        runs.append(("output under torch.no_grad()", False, False))
    if not setup.dropout:
        runs.append(("output in train mode", True, check_backward))
    for quantity, train, grad in runs:
        setup.user.train(train)
        try:
            with torch.set_grad_enabled(grad):
                y = as_tensor_output(setup.forward(setup.user, x.detach(), **user_kw))
        except KitSetupError:
            raise
        except Exception as e:
            detail = f"{type(e).__name__}: {e}"
            yield quantity, Mismatch(quantity, example, (), float("inf"), detail)
            return
        finally:
            setup.user.eval()
        leak = output_leak(y, setup)
        if leak:
            yield quantity, Mismatch(quantity, example, tuple(y.shape), float("inf"), leak)
            return
        yield quantity, y.detach()


def judge_parameters(setup: Setup, check, ref_grads: dict, plain_ref_grads) -> Mismatch | None:
    """Each parameter gradient of the module (its .grad) against the reference's pulled back
    through the weight map; the first failure. check(quantity, got, truth, plain, scale)."""
    expected = setup.weights.pull_back(ref_grads)
    plain_grads = setup.weights.pull_back(plain_ref_grads) if plain_ref_grads else {}
    params = dict(setup.user.named_parameters())
    compared = [k for k in setup.weights.names if k in expected and k in setup.weights.trainable]
    total = np.sqrt(sum(float(np.sum(expected[k] ** 2)) for k in compared))
    size = sum(expected[k].size for k in compared)
    for k in compared:
        got = params[k].grad
        got = _np(got) if got is not None else np.zeros_like(expected[k])
        # a gradient that is zero in exact arithmetic (a key bias) is judged against the
        # typical size of its neighbours', not against its own rounding noise
        scale = max(float(np.linalg.norm(expected[k])), total * np.sqrt(expected[k].size / size))
        found = check(f"grad[{k}]", got, expected[k], plain_grads.get(k), scale)
        if found:
            return found
    return None


def _rule(dtype, factor, floor, rtol, atol):
    return rule_for(dtype, factor=factor, floor=floor, rtol=rtol, atol=atol)


def compare(
    module,
    reference,
    example: Example,
    weight_map=None,
    *,
    forward=None,
    dtype=torch.float64,
    check_backward: bool = True,
    rtol=None,
    atol=None,
    factor=None,
    floor=None,
) -> Mismatch | None:
    """Run one example through module and reference; the first disagreement, or None.

    Shapes: x (batch, tokens, reference.d_in). Checked in order: output, dx, then each
    parameter gradient the weight map reads, in the module's order.
    """
    rule = _rule(dtype, factor, floor, rtol, atol)
    setup = build(module, reference, weight_map, forward, dtype, rule, check_backward)
    check_example(example, setup.context_length)
    return run_example(setup, example, check_backward)[1]


def check_example(example, context_length, tokens=None) -> None:
    """KitSetupError naming `example` unless its sizes are positive and its tokens fit the
    reference's context_length."""
    tokens = example.tokens if tokens is None else tokens
    if not isinstance(example.batch, int) or example.batch < 1 or tokens < 1:
        raise KitSetupError(f"example must have batch >= 1 and tokens >= 1, got {example!r}")
    if context_length is not None and tokens > context_length:
        raise KitSetupError(
            f"example has {tokens} tokens, past the reference's context_length "
            f"{context_length}: pass an example with at most {context_length} tokens"
        )


def measure(
    module,
    reference,
    example: Example,
    weight_map=None,
    *,
    forward=None,
    dtype=torch.float64,
    check_backward: bool = True,
    rtol=None,
    atol=None,
    factor=None,
    floor=None,
) -> list[Judgement]:
    """Every judgement on one example, up to the first failure (same keywords as compare):
    the errors, plain torch's errors and the bounds, e.g. to see the margins."""
    rule = _rule(dtype, factor, floor, rtol, atol)
    setup = build(module, reference, weight_map, forward, dtype, rule, check_backward)
    check_example(example, setup.context_length)
    return run_example(setup, example, check_backward)[0]


SCALES = (1.0, 4.0, 8.0)  # x's scale: large inputs give large logits


class ModuleCase(Case):
    """assert_matches_reference's case: Examples (batch, tokens, seed) through forward."""

    fresh = None  # builds a new Setup from the caller's objects (for stateful_note)

    def __init__(self, setup: Setup, check_backward, seed, max_batch, max_tokens, names):
        self.setup, self.check_backward, self.seed, self.names = setup, check_backward, seed, names
        self.report = Report(unread=tuple(setup.weights.warn_unread()), sizes=setup.sizes)
        if check_backward:
            self.report.frozen = tuple(setup.weights.warn_frozen())
        if setup.dropout:
            self.report.not_run = (
                f"the forward in train mode: the module has active dropout "
                f"({', '.join(setup.dropout)}); it runs in eval mode only",
            )
        plan = token_plan(setup.sizes, max_tokens, module_context(setup.user))
        self.max_tokens, boundaries, longer, self.report.not_reached, unchecked = plan
        self.report.max_tokens, self.report.boundaries = self.max_tokens, tuple(boundaries)
        self.report.longer, self.report.unchecked = tuple(longer), unchecked
        warn_not_reached(
            self.report.not_reached, max([self.max_tokens, *boundaries, *longer]), unchecked
        )
        self.max_batch = max_batch

    def examples(self):
        plain = st.builds(
            Example,
            batch=st.integers(1, self.max_batch),
            tokens=st.integers(1, self.max_tokens),
            seed=st.integers(0, 2**32 - 1),
            scale=st.sampled_from(SCALES),
        )
        if not takes_positions(self.setup.forward, self.setup.ref):
            return plain
        max_batch, max_tokens = self.max_batch, self.max_tokens

        @st.composite
        def with_positions(draw):  # positions from anywhere, or left padding
            batch, tokens = draw(st.integers(1, max_batch)), draw(st.integers(1, max_tokens))
            pads, start = (), 0
            if draw(st.booleans()):
                pads = tuple(draw(st.integers(0, tokens - 1)) for _ in range(batch))
            else:
                start = draw(st.integers(0, 2 * max_tokens))
            seed, scale = draw(st.integers(0, 2**32 - 1)), draw(st.sampled_from(SCALES))
            return Example(batch, tokens, seed, start, pads, scale)

        return with_positions()

    def run(self, example):
        return run_example(self.setup, example, self.check_backward)

    def probe(self):
        return Example(1, 1, self.seed)

    def ladder(self):
        counts = sorted({*self.report.boundaries, *self.report.longer})
        large = Example(1, min(16, self.max_tokens), self.seed, scale=SCALES[-1])
        return [large] + [Example(1, t, self.seed) for t in counts]

    def between(self, passed, failed):  # the token counts between a passing and a failing rung
        if failed.scale != 1.0:
            return [Example(1, t, self.seed, scale=failed.scale) for t in range(1, failed.tokens)]
        low = passed.tokens if passed and passed.scale == 1.0 else 0
        return [Example(1, t, self.seed) for t in range(low + 1, failed.tokens)]

    def message(self, mismatch):
        module, reference, named, options = self.names
        dtype = str(options.get("dtype", torch.float64)).replace("torch.", "")
        note = ""
        if self.fresh is not None:
            note = stateful_note(
                lambda: run_example(self.fresh(), mismatch.example, self.check_backward)[1]
            )
        return (
            f"{type(module).__name__} does not match npattn.{type(reference).__name__} "
            f"({dtype}): {mismatch}\n"
            f"replay: {replay_line(mismatch.example, 'compare', named, options)}{note}"
        )


def search(
    module,
    reference,
    weight_map=None,
    *,
    forward=None,
    max_examples: int = 50,
    seed: int = 0,
    dtype=torch.float64,
    rtol=None,
    atol=None,
    factor=None,
    floor=None,
    max_batch: int = 3,
    max_tokens: int | None = None,
    check_backward: bool = True,
) -> tuple[Mismatch | None, Report]:
    """find_mismatch, also returning the Report of the examples that passed."""
    return engine.search(
        _module_case(**locals()), engine.Search(max_examples=max_examples, seed=seed)
    )


def _module_case(module, reference, weight_map, forward, max_examples, seed, dtype, rtol,
                 atol, factor, floor, max_batch, max_tokens, check_backward,
                 options=None):  # fmt: skip
    check_sizes(max_examples=max_examples, seed=seed, max_batch=max_batch, max_tokens=max_tokens)
    rule = _rule(dtype, factor, floor, rtol, atol)
    setup = build(module, reference, weight_map, forward, dtype, rule, check_backward)
    named = {"weight_map": weight_map, "forward": forward}
    names = (module, reference, named, options or {})
    case = ModuleCase(setup, check_backward, seed, max_batch, max_tokens, names)
    case.fresh = lambda: build(module, reference, weight_map, forward, dtype, rule, check_backward)
    return case


def stateful_note(replay) -> str:
    """A sentence when the failure does not come back on a fresh copy of the module
    (replay() runs the example on one and gives its Mismatch or None): then it depended on
    what earlier calls left in the module."""
    try:
        again = replay()
    except Exception:  # a fresh copy that raises reproduces a failure of its own
        return ""
    if again is not None:
        return ""
    return (
        "\nthis failure depended on earlier calls: on a fresh copy of the module the same "
        "example passes, so the module keeps state between calls (a mask or table built on "
        "the first call, a cache, a counter) and the replay line alone does not reproduce it"
    )


def find_mismatch(module, reference, weight_map=None, **kwargs) -> Mismatch | None:
    """Search for the smallest Example on which module and reference disagree; None if
    `max_examples` examples agree. Deterministic for a given `seed`.

    Token counts run from 1 to max_tokens (default: past twice every structural size of
    the reference, its window, cache length or tile, at least 16 and at most its
    context_length); T = W - 1, W, W + 1 and 2W + 1 for each such size W are also run, and
    T = 17, 33, 65 past that range (up to the context_length and max_tokens). The output is
    also judged under torch.no_grad() and in train mode (unless the module has active
    dropout), and its dtype and device must be the input's.
    Keywords: forward, max_examples, seed, dtype, rtol, atol, factor, floor, max_batch,
    max_tokens, check_backward.
    """
    return search(module, reference, weight_map, **kwargs)[0]


def replay_line(example, call: str, named: dict, kwargs: dict) -> str:
    """A line of Python that replays the case. named: {argument: what the caller passed},
    printed as the argument's own name (the caller's variable) or None."""
    args = [f"{k}={'None' if v is None else k}" for k, v in named.items()]
    args.append(f"dtype={kwargs.get('dtype', torch.float64)}")
    if "check_backward" in kwargs:
        args.append(f"check_backward={kwargs['check_backward']}")
    args += [f"{k}={kwargs[k]!r}" for k in OVERRIDES if kwargs.get(k) is not None]
    ex = ", ".join(f"{k}={v!r}" for k, v in vars(example).items())
    return (
        f"import torch, torch_port.testing; torch_port.testing.{call}(module, reference, "
        f"torch_port.testing.{type(example).__name__}({ex}), {', '.join(args)})"
    )


OVERRIDES = ("rtol", "atol", "factor", "floor")


def assert_matches_reference(
    module, reference, weight_map=None, *, forward=None, **kwargs
) -> Report:
    """Raise ReferenceMismatchError if module and the npattn reference disagree anywhere.

    Shapes: forward(module, x) maps (B, T, d_in) -> (B, T, d_out) like reference(x).
    kwargs: as for find_mismatch. The message names the quantity, shapes, seed and error,
    and gives a `replay:` line. Setup problems raise KitSetupError instead. Returns a
    Report of what was checked.
    """
    __tracebackhide__ = True
    arguments = dict(
        forward=None, max_examples=50, seed=0, dtype=torch.float64, rtol=None, atol=None,
        factor=None, floor=None, max_batch=3, max_tokens=None, check_backward=True,
    )  # fmt: skip
    unknown = sorted(set(kwargs) - set(arguments))
    if unknown:
        raise TypeError(f"assert_matches_reference() got unexpected keyword arguments {unknown}")
    arguments.update(kwargs, forward=forward)
    options = {"check_backward": True, **kwargs}
    case = _module_case(module, reference, weight_map, options=options, **arguments)
    search = engine.Search(max_examples=arguments["max_examples"], seed=arguments["seed"])
    return engine.check(case, search)
