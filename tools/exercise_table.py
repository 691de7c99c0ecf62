"""Print every exercise's catalogued mistakes and the checker's verdict on each.

    python tools/exercise_table.py [NAME ...]

Each mistake's wrong implementation is checked as if a student had written it: the verdict
should be "not yet" with the mistake's own id. The reference solution should pass.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npattn.exercises import NAMES, check, get  # noqa: E402


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
    sys.exit(main(sys.argv[1:] or NAMES))
