"""Print every exercise's catalogued mistakes and the checker's verdict on each.

    python tools/exercise_table.py [--compact] [NAME ...]

Each mistake's wrong implementation is checked as if a student had written it: the verdict
should be "not yet" with the mistake's own id. The reference solution should pass.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npattn.exercises import NAMES, check, get  # noqa: E402


def compact(names) -> int:
    """One line per exercise: each mistake's id, marked ok when recognised as itself."""
    ok = True
    for name in names:
        ex = get(name)
        solved = check(name, ex.solution).passed
        marks = []
        for m in ex.mistakes:
            r = check(name, m.fn)
            good = not r.passed and r.mistake == m.id
            ok &= good
            marks.append(f"{m.id} {'ok' if good else 'MISSED (' + str(r.mistake) + ')'}")
        ok &= solved
        print(f"{name:26} solution {'passes' if solved else 'FAILS'}; " + ", ".join(marks))
    print("every mistake recognised, every solution passes" if ok else "SOME VERDICTS ARE WRONG")
    return 0 if ok else 1


def main(names) -> int:
    ok = True
    print(f"{'exercise':28} {'implementation':28} {'verdict':10} {'recognised as':24} {'s':>5}")
    for name in names:
        ex = get(name)
        rows = [("solution", ex.solution, None)] + [(m.id, m.fn, m.id) for m in ex.mistakes]
        for label, fn, want in rows:
            t = time.perf_counter()
            r = check(name, fn)
            dt = time.perf_counter() - t
            good = r.passed if want is None else (not r.passed and r.mistake == want)
            ok &= good
            verdict = "passed" if r.passed else "not yet"
            mark = "" if good else "  <-- UNEXPECTED"
            print(f"{name:28} {label:28} {verdict:10} {r.mistake or '-':24} {dt:5.2f}{mark}")
    print("every mistake recognised, every solution passes" if ok else "SOME VERDICTS ARE WRONG")
    return 0 if ok else 1


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--compact"]:
        sys.exit(compact(args[1:] or NAMES))
    sys.exit(main(args or NAMES))
