"""check(name, fn): search for the smallest input where fn disagrees with npattn, and say why.

The search is Hypothesis's (`hypothesis.find`): it draws the exercise's integer parameters
(sizes, switches, a seed), keeps the first input on which the student's function is wrong,
and shrinks it to the smallest. The comparison runs in float64 at RTOL = 1e-9, so a missing
eps or a missing scale is caught, not forgiven. Whatever the student's function does (raise,
return the wrong shape, a list, NaN, modify its input), the verdict is a Result, never an
exception.
"""

from __future__ import annotations

import html
import random
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import npattn

from ._compare import RTOL, Failure, as_outputs, compare, same
from ._core import Exercise

MAX_EXAMPLES = 150  # inputs the search tries before it declares the function correct
SHOW_VALUES = 12  # arrays up to this many entries are printed in full in a verdict


@dataclass
class Result:
    """The verdict of check(): passed, the recognised mistake's id (or None), and a message."""

    name: str
    passed: bool
    mistake: str | None = None
    message: str = ""
    inputs: dict | None = field(default=None, repr=False)  # the smallest failing input
    failure: Failure | None = field(default=None, repr=False)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.message

    def _repr_html_(self) -> str:
        """The verdict in a notebook: the first line bold (green or red), the rest as text."""
        head, _, rest = self.message.partition("\n")
        colour = "#1a7f37" if self.passed else "#b3261e"
        body = f'<pre style="white-space: pre-wrap">{html.escape(rest)}</pre>' if rest else ""
        return f'<p><strong style="color: {colour}">{html.escape(head)}</strong></p>{body}'


def _copy(inputs: dict) -> dict:
    return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in inputs.items()}


LIBRARIES = tuple(str(Path(m.__file__).resolve().parent) for m in (np, npattn))


def _where_raised(exc: BaseException) -> str:
    """' (line N: `code`)' of the innermost frame in the student's code (outside numpy and
    npattn), or ''."""
    tb = traceback.extract_tb(exc.__traceback__)
    frames = [f for f in tb if not str(Path(f.filename).resolve()).startswith(LIBRARIES)]
    if not frames:
        return ""
    f = frames[-1]
    return f" (line {f.lineno}: `{(f.line or '').strip()}`)"


def _message(exc: BaseException) -> str:
    """The first line of str(exc), or a stand-in when its __str__ raises or is not a str."""
    try:
        text = str(exc)
    except Exception:
        return "(its message could not be shown: its __str__ failed)"
    return text.splitlines()[0] if text.strip() else ""


def run(fn, ex: Exercise, inputs: dict):
    """(outputs, None) or (None, Failure): call fn on copies of the inputs, catching all but
    KeyboardInterrupt (Ctrl-C still stops the checker)."""
    given = _copy(inputs)
    try:
        with np.errstate(all="ignore"):
            value = fn(*given.values())
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # the student's error is the verdict, not ours
        msg = _message(exc)
        text = f"raised {type(exc).__name__}{': ' + msg if msg else ''}{_where_raised(exc)}"
        return None, Failure("raised", text)
    for k, v in inputs.items():
        if isinstance(v, np.ndarray) and not np.array_equal(given[k], v, equal_nan=True):
            return None, Failure("modified", f"modified its input `{k}` in place", k)
    out = as_outputs(value, len(ex.outputs))
    return (None, out) if isinstance(out, Failure) else (out, None)


def evaluate(fn, ex: Exercise, inputs: dict):
    """(student outputs or None, Failure or None) on one input."""
    got, failure = run(fn, ex, inputs)
    if failure is not None:
        return None, failure
    with np.errstate(all="ignore"):
        expected = ex.reference(**_copy(inputs))
    return got, compare(ex.outputs, got, expected)


def _agreement(fn, m, ex: Exercise, probes) -> int | None:
    """How many probes give fn and the mistake equal outputs; None if any probe tells them
    apart. Both raising the same exception type counts as agreeing, not as a compared output."""
    compared = 0
    for p in probes:
        inputs = ex.inputs(p)
        got, failure = run(fn, ex, inputs)
        want, wfailure = run(m.fn, ex, inputs)
        if failure is not None or wfailure is not None:
            same_raise = failure is not None and wfailure is not None
            same_raise = same_raise and failure.kind == wfailure.kind == "raised"
            if same_raise and failure.text.split(":")[0] == wfailure.text.split(":")[0]:
                continue
            return None
        if not same(ex.outputs, got, want):
            return None
        compared += 1
    return compared


def recognise(fn, ex: Exercise, params: dict):
    """(mistake, named): the catalogued mistake whose outputs are the student's on the failing
    input, two more of its size and inputs of the largest sizes, named = True; else the first
    that agrees on the small inputs only, named = False (a small input can make two different
    functions agree); else (None, False)."""
    probes = [params] + [{**params, "seed": params["seed"] + i} for i in (1, 2)]
    large = {k: (hi if hi > 1 else params[k]) for k, (lo, hi) in ex.params.items()}
    large = [{**large, "seed": params["seed"] + i} for i in (0, 1)]
    candidates = []
    for m in ex.mistakes:
        small = _agreement(fn, m, ex, probes)
        if small is None:
            continue
        big = _agreement(fn, m, ex, large)
        if big is not None and small + big > 0:
            return m, True  # agrees everywhere, on some real outputs
        if small > 0:
            candidates.append(m)
    return (candidates[0], False) if candidates else (None, False)


def _show(value) -> str:
    if isinstance(value, np.ndarray):
        if value.size <= SHOW_VALUES:
            text = np.array2string(value, precision=4, separator=", ", suppress_small=False)
            return f"shape {value.shape} = " + " ".join(text.split())
        return f"shape {value.shape}"
    return repr(value)


def _same_inputs(a: dict, b: dict) -> bool:
    for k, v in a.items():
        w = b[k]
        if isinstance(v, np.ndarray) or isinstance(w, np.ndarray):
            if np.shape(v) != np.shape(w) or not np.array_equal(v, w, equal_nan=True):
                return False
        elif v != w:
            return False
    return True


def used_params(ex: Exercise, params: dict, inputs: dict) -> dict:
    """The parameters the input depends on: one left out (B when there is no batch axis)
    changes nothing when set to another value of its range. The seed is always kept."""
    used = {}
    for k, v in params.items():
        lo, hi = ex.params.get(k, (v, v))
        other = hi if v != hi else lo
        if k == "seed" or other == v:
            used[k] = v
            continue
        try:
            if not _same_inputs(inputs, ex.inputs({**params, k: other})):
                used[k] = v
        except Exception:  # an input that cannot be made is a change
            used[k] = v
    return used


def describe_input(ex: Exercise, params: dict, inputs: dict) -> str:
    sizes = ", ".join(f"{k}={v}" for k, v in used_params(ex, params, inputs).items())
    lines = [f"Smallest failing input ({sizes}):"]
    lines += [f"    {k}: {_show(v)}" for k, v in inputs.items()]
    return "\n".join(lines)


def _search(fn, ex: Exercise, seed: int, max_examples: int):
    """The smallest failing parameters, or None if every input tried passes."""
    try:
        import hypothesis
        from hypothesis import HealthCheck, Phase, Verbosity, settings
        from hypothesis import strategies as st
    except ImportError as e:  # an optional dependency: `pip install npattn[exercises]`
        raise ImportError(
            "npattn.exercises.check needs hypothesis: pip install 'npattn[exercises]' "
            "(or pip install hypothesis)"
        ) from e
    strategy = st.fixed_dictionaries(
        {k: st.integers(lo, hi) for k, (lo, hi) in ex.params.items()}
        | {"seed": st.integers(0, 2**16)}
    )

    def fails(p) -> bool:
        return evaluate(fn, ex, ex.inputs(p))[1] is not None

    config = settings(
        max_examples=max_examples,
        database=None,
        derandomize=False,
        deadline=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        print_blob=False,
    )
    try:
        return hypothesis.find(strategy, fails, settings=config, random=random.Random(seed))
    except hypothesis.errors.NoSuchExample:
        return None
    except hypothesis.errors.HypothesisException:
        # a function whose answers change from call to call: report the first failing input
        # of a plain seeded scan instead of a shrunk one
        rng = np.random.default_rng(seed)
        for _ in range(max_examples):
            p = {k: int(rng.integers(lo, hi + 1)) for k, (lo, hi) in ex.params.items()}
            p["seed"] = int(rng.integers(0, 2**16))
            if fails(p):
                return p
        return None


def _changes(fn, ex: Exercise, inputs: dict, got, failure: Failure, calls: int = 8) -> bool:
    """Does fn give another answer when called again on the same input (a few times: a random
    answer can repeat by chance on a small input)?"""
    for _ in range(calls):
        again, again_failure = run(fn, ex, inputs)
        if (got is None) != (again is None):
            return True
        if got is not None and not same(ex.outputs, got, again):
            return True
        if got is None and failure.text.split(":")[0] != again_failure.text.split(":")[0]:
            return True  # raised both times, but not the same kind of error
    return False


def check(name: str, fn, *, seed: int = 0, max_examples: int = MAX_EXAMPLES) -> Result:
    """Check the student's `fn` for exercise `name` against npattn's reference.

    Returns a Result: .passed, .mistake (the id of a recognised mistake, or None) and
    .message, which names the smallest failing input, the wrong output and where, and, for a
    recognised mistake, its name and a hint. The search is deterministic for a given seed.
    Only outputs are compared, never the algorithm (calling npattn's own op passes). There is
    no time limit: a function that never returns keeps check() waiting (Ctrl-C stops it).
    """
    from . import get

    ex = get(name)
    if not callable(fn):
        msg = f"{ex.name}: not yet. check() needs a function, got a {type(fn).__name__}."
        return Result(ex.name, False, None, msg)
    params = _search(fn, ex, seed, max_examples)
    if params is None:
        msg = (
            f"{ex.name}: correct. It agrees with npattn on every input tried "
            f"({max_examples} drawn by Hypothesis, seed {seed}), to rtol {RTOL:g} in float64. "
            "Only the outputs are compared, not how they were computed."
        )
        return Result(ex.name, True, None, msg)
    inputs = ex.inputs(params)
    got, failure = evaluate(fn, ex, inputs)
    if failure is None:  # a function that is right and wrong on the same input
        failure = Failure("flaky", "gave different answers on the same input")
    changes = failure.kind == "flaky" or _changes(fn, ex, inputs, got, failure)
    lines = [f"{ex.name}: not yet.", describe_input(ex, params, inputs), ""]
    lines.append(
        f"Your function {failure.text}."
        if failure.kind in ("raised", "count", "modified", "flaky")
        else f"Your {failure.text}."
    )
    if failure.right:
        are = "is" if len(failure.right) == 1 else "are"
        lines.append(f"({' and '.join(failure.right)} {are} right.)")
    if changes:
        lines.append(
            "Called twice on this same input, your function gave different outputs: does it "
            "draw random numbers, or keep state between calls? The checker needs one answer "
            "per input."
        )
    m, named = recognise(fn, ex, params) if not changes else (None, False)
    if m is not None and named:
        lines += ["", f"This looks like a known mistake: {m.name} [{m.id}].", f"Hint: {m.hint}"]
    else:
        if m is not None:
            lines += [
                "",
                f"On this input your output coincides with a known mistake ({m.name}), but on "
                "larger inputs it does not: yours is a different error.",
            ]
        lines += ["", f"Hint: `python -m npattn exercises hint {ex.name}`, or read docs/{ex.docs}."]
    mistake_id = m.id if m is not None and named else None
    return Result(ex.name, False, mistake_id, "\n".join(lines), inputs, failure)
