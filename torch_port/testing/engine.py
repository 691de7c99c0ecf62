"""The kit's one search-and-shrink loop, serving the module, decoding, SDPA and transformers
checks alike.

A Case knows how to draw its examples (a Hypothesis strategy), run one (its judgements and
its first disagreement), which explicit examples to run when the random search finds
nothing (the boundaries of the reference's structural sizes), and how to word a failure
with its replay line. `Search` holds how long and from which seed to search; the tolerance
is the case's precision.Rule. `check(case, search)` returns the Report or raises
ReferenceMismatchError; `search(case, search)` returns the shrunk Mismatch (or None) and the
Report.
"""

from __future__ import annotations

import contextlib
import random
import warnings
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, find, settings
from hypothesis.errors import NoSuchExample

from .errors import Mismatch, ReferenceMismatchError, StructuralSizeWarning
from .precision import Judgement


@dataclass
class Report:
    """What a passing check did: examples run, parameters never compared, and per quantity
    the judgement closest to its bound (error / allowed largest)."""

    examples: int = 0
    unread: tuple = ()
    worst: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)  # the reference's structural sizes
    max_tokens: int = 0  # the most tokens drawn
    boundaries: tuple = ()  # token counts run explicitly, around each structural size
    longer: tuple = ()  # longer token counts run explicitly, past the random range
    unchecked: str = ""  # token counts up to the largest structural size never run
    frozen: tuple = ()  # parameters the map reads whose gradients are not compared
    not_run: tuple = ()  # what was not run, and why (train mode with active dropout)
    not_reached: tuple = ()  # structural sizes past max_tokens, so never crossed

    def note(self, judgements) -> None:
        for j in judgements:
            old = self.worst.get(j.quantity)
            if old is None or _closeness(j) > _closeness(old):
                self.worst[j.quantity] = j


def _closeness(j: Judgement) -> float:
    return j.error / j.allowed if j.allowed else 0.0


def warn_not_reached(not_reached, max_tokens: int, unchecked: str = "") -> None:
    if not_reached:
        never = f"; token counts never checked: {unchecked}" if unchecked else ""
        warnings.warn(
            f"the reference changes behaviour at lengths the kit does not reach "
            f"({', '.join(not_reached)}; it runs at most {max_tokens} tokens), so nothing "
            f"past them is checked{never}; pass max_tokens= to reach them",
            StructuralSizeWarning,
            stacklevel=4,
        )


@contextlib.contextmanager
def no_local_constants():
    """Hypothesis, by default, sometimes draws integers it found in the source files of the
    modules imported so far (yours included). The kit's verdict must depend only on module,
    reference and seed, so its searches run without those constants."""
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # another Hypothesis layout: nothing to switch off
        yield
        return
    get = getattr(providers, "_get_local_constants", None)
    cache = getattr(getattr(providers, "CONSTANTS_CACHE", None), "cache", None)
    if get is None or not hasattr(cache, "clear") or not hasattr(providers, "Constants"):
        yield
        return
    empty = providers.Constants()
    providers._get_local_constants = lambda: empty
    cache.clear()  # its entries may hold local constants
    try:
        yield
    finally:
        providers._get_local_constants = get
        cache.clear()  # and ours would hide the caller's from the caller's own tests


def find_smallest(examples, disagrees, max_examples: int, seed: int, ladder=(), between=None):
    """The smallest example on which `disagrees` is true (Hypothesis's find and shrink), or
    None. Deterministic for a seed, whatever the Hypothesis profile; no database and no
    explain phase, so a search costs only the examples it runs.

    ladder: explicit examples run in order when the search finds nothing (the boundaries
    of the reference's structural sizes, too long for a random draw to hit reliably); the
    first that disagrees is narrowed by between(last passing rung, it), tried in order.
    """
    options = settings(
        max_examples=max_examples,
        derandomize=False,  # random=Random(seed) below makes it deterministic, whatever profile
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.generate, Phase.shrink),
    )
    try:
        with no_local_constants():
            return find(examples, disagrees, settings=options, random=random.Random(seed))
    except NoSuchExample:
        pass
    passed = None
    for rung in ladder:
        if disagrees(rung):
            smaller = between(passed, rung) if between else ()
            return next((ex for ex in smaller if disagrees(ex)), rung)
        passed = rung
    return None


@dataclass(frozen=True)
class Search:
    """How a check searches: at most max_examples random examples, from seed."""

    max_examples: int = 50
    seed: int = 0


class Case:
    """One kind of check. Subclasses set `report` and define examples() and run(); the rest
    has defaults (no probe, no explicit examples)."""

    report: Report

    def examples(self):
        """The Hypothesis strategy of this check's examples."""
        raise NotImplementedError

    def run(self, example) -> tuple[list, Mismatch | None]:
        """Every judgement on one example, up to the first failure, and that failure."""
        raise NotImplementedError

    def probe(self):
        """An example run before the search, so that setup errors surface first (or None)."""
        return None

    def ladder(self) -> list:
        """Explicit examples, run in order when the random search finds nothing."""
        return []

    def between(self, passed, failed) -> list:
        """Smaller examples to try when the ladder's `failed` disagrees after `passed`."""
        return []

    def message(self, mismatch: Mismatch) -> str:
        """The ReferenceMismatchError's text: what disagrees, and a line that replays it."""
        return str(mismatch)


def search(case: Case, options: Search) -> tuple[Mismatch | None, Report]:
    """The smallest example on which `case` disagrees, run again for its Mismatch (None when
    every example agrees), and the case's Report of what passed."""
    report = case.report

    def disagrees(example) -> bool:
        judgements, found = case.run(example)
        report.examples += 1
        if found is None:
            report.note(judgements)
        return found is not None

    probe = case.probe()
    if probe is not None:
        disagrees(probe)  # a setup error surfaces here, before any search
    example = find_smallest(
        case.examples(),
        disagrees,
        options.max_examples,
        options.seed,
        case.ladder(),
        case.between,
    )
    if example is None:
        return None, report
    return case.run(example)[1], report


def check(case: Case, options: Search) -> Report:
    """search(), raising ReferenceMismatchError (case.message) on a disagreement."""
    __tracebackhide__ = True  # pytest shows the caller's line, not the loop
    mismatch, report = search(case, options)
    if mismatch is not None:
        raise ReferenceMismatchError(case.message(mismatch), mismatch)
    return report
