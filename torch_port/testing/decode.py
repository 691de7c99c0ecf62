"""assert_decode_matches: drive module and reference through chunked KV-cache decoding.

Both start from an empty cache and take the same input in the same chunks (their sizes drawn
by Hypothesis: a prefill, then single tokens or more); every chunk's output is compared.
This catches what a full forward cannot: a cache pointer that never advances, a causal mask
without the chunk's offset, keys appended twice, a cache never reset.

Shapes: x (B, T_total, d_in) cut on the token axis into chunks (B, n_i, d_in), sum n_i =
T_total; each chunk's output (B, n_i, d_out).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

from . import engine
from .check import check_example, replay_line, stateful_note
from .engine import Report, warn_not_reached
from .errors import KitSetupError
from .precision import judge, rule_for
from .setup import (
    NumpyAtDtype,
    TorchTwin,
    as_tensor_output,
    build,
    call_setup_error,
    calling_error,
    check_sizes,
    module_context,
    numpy_dtype,
    token_plan,
)


@dataclass(frozen=True)
class DecodeExample:
    """x = default_rng(seed).standard_normal((batch, sum(chunks), d_in)), fed in chunks."""

    batch: int
    chunks: tuple
    seed: int

    def __str__(self) -> str:
        return (
            f"x of shape (B={self.batch}, T={sum(self.chunks)}, d_in) from seed {self.seed}, "
            f"fed in chunks of {list(self.chunks)} tokens"
        )


def decode_ladder(sizes: dict, cap: int, seed: int) -> list:
    """Chunkings that cross each structural size W, shortest first: a prefill of W - 1 then
    single tokens past W, W then one, one chunk of W + 1, W + 1 after one cached token, and
    W + 1 then W (2W + 1 in all). Each cut to cap tokens in all."""
    ladder = []
    for w in sorted(set(sizes.values())):
        if w - 1 > cap:
            continue
        for chunks in ((w - 1, 1, 1, 1), (w, 1), (w + 1,), (1, w + 1), (w + 1, w)):
            kept, total = [], 0
            for n in (n for n in chunks if n > 0):
                n = min(n, cap - total)
                if n < 1:
                    break
                kept.append(n)
                total += n
            chunks = tuple(kept)
            example = DecodeExample(1, chunks, seed)
            if chunks and example not in ladder:
                ladder.append(example)
    return sorted(ladder, key=lambda ex: (sum(ex.chunks), len(ex.chunks)))


def longer_decodes(longer, seed: int, ladder=()) -> list:
    """Decodes past the random range, for each longer count N (17, 33, 65 within the cap):
    a prefill of N - 1 then one token, and for the first N single tokens all the way."""
    rungs = []
    for i, n in enumerate(longer):
        for chunks in ((n - 1, 1),) + (((1,) * n,) if i == 0 else ()):
            example = DecodeExample(1, chunks, seed)
            if example not in ladder and example not in rungs:
                rungs.append(example)
    return rungs


def shorter_decodes(passed, failed) -> list:
    """Shorter versions of a failing chunking, shortest first: for each total t between the
    last passing rung's and the failing one's, one chunk of t and a prefill of t - 1 then
    one token (when that is at most 64 totals to try); then the failing chunking's prefixes."""
    chunks, total = failed.chunks, sum(failed.chunks)
    low = sum(passed.chunks) if passed is not None else 0
    shorter = []
    if total - low <= 64:
        for t in range(max(low, 1) + 1, total):
            shorter += [(t,), (t - 1, 1)]
    shorter += [chunks[:n] for n in range(1, len(chunks))]
    return [DecodeExample(failed.batch, c, failed.seed) for c in shorter]


def default_step(module, x):
    return module(x, use_cache=True)


def default_reset(module):
    if not hasattr(module, "reset_cache"):
        raise KitSetupError(
            f"{type(module).__name__} has no reset_cache(): pass reset=<callable(module)> "
            f"that empties its cache"
        )
    module.reset_cache()


class _PlainDecoder:
    """The yardstick with a cache: torch_port's twin if it decodes, else npattn at the dtype."""

    def __init__(self, ref64, dtype, device):
        self.twin = None
        try:
            twin = TorchTwin(ref64, dtype, device)
            if "use_cache" in inspect.signature(twin.model.forward).parameters:
                self.twin = twin
        except (TypeError, KeyError, ValueError, AttributeError):
            pass
        if self.twin is None:
            np_dtype = numpy_dtype(dtype)
            if np_dtype is None:
                raise KitSetupError(f"decoding in {dtype} needs a torch_port twin that decodes")
            self.numpy = NumpyAtDtype(ref64, np_dtype)

    def reset(self):
        (self.twin.model if self.twin else self.numpy.model).reset_cache()

    def step(self, x64):
        if self.twin:
            x = torch.tensor(x64, dtype=self.twin.dtype, device=self.twin.device)
            with torch.no_grad():
                return self.twin.model(x, use_cache=True).to("cpu", torch.float64).numpy()
        m = self.numpy
        return m.model.forward(x64.astype(m.np_dtype), use_cache=True).astype(np.float64)


def _setup(module, reference, weight_map, dtype, rule):
    if not hasattr(reference, "reset_cache"):
        raise KitSetupError(
            f"npattn.{type(reference).__name__} has no KV cache (reset_cache, use_cache): "
            f"decode against a reference that has one, e.g. npattn.GroupedQueryAttention"
        )
    setup = build(module, reference, weight_map, None, dtype, rule, check_backward=False)
    setup.plain = _PlainDecoder(setup.ref, dtype, setup.device) if rule.needs_plain else None
    return setup


def run_decode(setup, example: DecodeExample, step, reset):
    """Judgements for every chunk, stopping at the first failure, and that failure."""
    rng = np.random.default_rng(example.seed)
    x64 = rng.standard_normal((example.batch, sum(example.chunks), setup.d_in))
    x64 = torch.from_numpy(x64).to(setup.dtype).to(torch.float64).numpy()
    setup.ref.reset_cache()
    reset(setup.user)
    if setup.plain:
        setup.plain.reset()
    judgements, start = [], 0
    for i, n in enumerate(example.chunks):
        chunk = x64[:, start : start + n]  # (B, n, d_in)
        y_ref = setup.ref.forward(chunk, use_cache=True)
        x = torch.tensor(chunk, dtype=setup.dtype, device=setup.device)
        with torch.no_grad():
            try:
                y = as_tensor_output(step(setup.user, x), "step(module, x)")
            except KitSetupError:
                raise
            except Exception as e:
                from .errors import Mismatch

                if calling_error(e, step, default_step, run_decode, module=setup.user):
                    raise call_setup_error(
                        e,
                        f"{type(setup.user).__name__} through step(module, x)",
                        "the kit calls step(module, x_chunk), by default "
                        "module(x, use_cache=True); pass step=<callable(module, x)> that runs "
                        "one cached call",
                    ) from e
                detail = f"{type(e).__name__}: {e}"
                return judgements, Mismatch(f"step {i}", example, (), float("inf"), detail)
        plain = setup.plain.step(chunk) if setup.plain else None
        quantity = f"step {i} output (tokens {start}..{start + n - 1})"
        y = y.to("cpu", torch.float64).numpy()
        j, found = judge(quantity, y, y_ref, plain, setup.rule, example)
        judgements.append(j)
        if found:
            return judgements, found
        start += n
    return judgements, None


def compare_decode(
    module,
    reference,
    example: DecodeExample,
    weight_map=None,
    *,
    step=None,
    reset=None,
    dtype=torch.float64,
    rtol=None,
    atol=None,
    factor=None,
    floor=None,
):
    """One decoding example: the first chunk whose output disagrees (a Mismatch), or None."""
    rule = rule_for(dtype, factor=factor, floor=floor, rtol=rtol, atol=atol)
    setup = _setup(module, reference, weight_map, dtype, rule)
    if not example.chunks or any(not isinstance(n, int) or n < 1 for n in example.chunks):
        raise KitSetupError(f"example's chunks must be positive token counts, got {example!r}")
    check_example(example, setup.context_length, sum(example.chunks))
    return run_decode(setup, example, step or default_step, reset or default_reset)[1]


def assert_decode_matches(
    module,
    reference,
    weight_map=None,
    *,
    step=None,
    reset=None,
    dtype=torch.float64,
    max_examples: int = 25,
    seed: int = 0,
    max_batch: int = 2,
    max_tokens: int | None = None,
    max_chunk: int | None = None,
    rtol=None,
    atol=None,
    factor=None,
    floor=None,
) -> Report:
    """Raise ReferenceMismatchError unless every chunk of a cached decode matches.

    step(module, x_chunk) -> Tensor runs one cached call (default module(x, use_cache=True));
    reset(module) empties the cache (default module.reset_cache()). The reference decodes
    with reference(x, use_cache=True). Chunk sizes run from 1 to max_chunk (default: 4, or
    one past the reference's window, cache length or tile), in total at most max_tokens
    (default: past twice each of those sizes, at least 16, at most the context_length).
    Chunkings around each size W (a prefill of W - 1 then single tokens, a chunk of W + 1
    after a cached token, ...) are also run, and past the random range a prefill of N - 1
    then one token for N = 17, 33, 65 and 17 single tokens. Returns a Report.
    """
    __tracebackhide__ = True
    check_sizes(max_examples=max_examples, seed=seed, max_batch=max_batch,
                max_tokens=max_tokens, max_chunk=max_chunk)  # fmt: skip
    rule = rule_for(dtype, factor=factor, floor=floor, rtol=rtol, atol=atol)
    setup = _setup(module, reference, weight_map, dtype, rule)
    named = {"weight_map": weight_map, "step": step, "reset": reset}
    kwargs = dict(dtype=dtype, rtol=rtol, atol=atol, factor=factor, floor=floor)
    case = DecodeCase(setup, step, reset, seed, max_batch, max_tokens, max_chunk)
    case.names = (module, reference, named, kwargs)
    case.fresh = lambda: _setup(module, reference, weight_map, dtype, rule)
    return engine.check(case, engine.Search(max_examples=max_examples, seed=seed))


class DecodeCase(engine.Case):
    """assert_decode_matches's case: DecodeExamples fed chunk by chunk through the caches."""

    def __init__(self, setup, step, reset, seed, max_batch, max_tokens, max_chunk):
        self.setup, self.seed, self.max_batch = setup, seed, max_batch
        self.step, self.reset = step or default_step, reset or default_reset
        report = Report(unread=tuple(setup.weights.warn_unread()), sizes=setup.sizes)
        max_tokens, boundaries, longer, report.not_reached, unchecked = token_plan(
            setup.sizes, max_tokens, module_context(setup.user)
        )
        report.longer, report.unchecked = tuple(longer), unchecked
        warn_not_reached(report.not_reached, max([max_tokens, *boundaries, *longer]), unchecked)
        sizes = setup.sizes.items()
        inner = [w for k, w in sizes if k not in ("context_length", "cache positions")]
        if max_chunk is None:
            max_chunk = min(max([4] + [w + 1 for w in inner]), max_tokens)
        report.max_tokens = self.max_tokens = max_tokens
        self.max_chunk = max_chunk
        self.rungs = decode_ladder(setup.sizes, max(boundaries + longer + [max_tokens]), seed)
        self.rungs += longer_decodes(longer, seed, self.rungs)
        self.rungs.sort(key=lambda ex: (sum(ex.chunks), len(ex.chunks)))
        report.boundaries = tuple(ex.chunks for ex in self.rungs)
        self.report = report

    def examples(self):
        max_tokens = self.max_tokens

        def fit(sizes: list) -> tuple:
            kept, total = [], 0
            for n in sizes:
                n = min(n, max_tokens - total)
                if n < 1:
                    break
                kept.append(n)
                total += n
            return tuple(kept)

        chunk = st.integers(1, self.max_chunk)
        return st.builds(
            DecodeExample,
            batch=st.integers(1, self.max_batch),
            chunks=st.lists(chunk, min_size=1, max_size=max_tokens).map(fit),
            seed=st.integers(0, 2**32 - 1),
        )

    def run(self, example):
        return run_decode(self.setup, example, self.step, self.reset)

    def probe(self):
        return DecodeExample(1, (1,), self.seed)

    def ladder(self):
        return self.rungs

    def between(self, passed, failed):
        return shorter_decodes(passed, failed)

    def message(self, mismatch):
        module, reference, named, kwargs = self.names
        line = replay_line(mismatch.example, "compare_decode", named, kwargs)
        dtype = str(kwargs["dtype"]).replace("torch.", "")
        note = stateful_note(
            lambda: run_decode(self.fresh(), mismatch.example, self.step, self.reset)[1]
        )
        return (
            f"{type(module).__name__} does not decode like npattn.{type(reference).__name__} "
            f"({dtype}): {mismatch}\nreplay: {line}{note}"
        )
