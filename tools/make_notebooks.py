"""Write the exercise notebooks, one per part, and the docs' exercise list from
npattn.exercises (so they never drift).

    python tools/make_notebooks.py          # notebooks/exercises_*.ipynb, docs/exercises/index.md
    python tools/make_notebooks.py --check  # exit 1 if one on disk is out of date

Each exercise is a heading with its docs page, its hints folded away, the stub to fill in, and
a cell calling check(). build(part, solved=True) fills in the reference solutions instead of
the stubs: the tests execute those notebooks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nbformat  # noqa: E402
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook  # noqa: E402

from npattn.exercises import PARTS, all_exercises  # noqa: E402

OUT = ROOT / "notebooks"
INDEX = ROOT / "docs" / "exercises" / "index.md"
FILES = {part: f"exercises_{i}_{part}.ipynb" for i, part in enumerate(PARTS, 1)}

INTRO = """\
# Exercises: {title}

Write each function in the cell under its heading, then run the `check` cell below it. The
checker (npattn.exercises.check) searches with Hypothesis for the smallest input on which
your function disagrees with npattn, and says which output is wrong, where, and, if it
recognises the mistake, its name and a hint. Hints are folded under each exercise; the
solution is one command away (`python -m npattn exercises solution NAME`), so try first.

The same exercises from a terminal: `python -m npattn exercises list`.
"""


# the exercises' cells use numpy; this cell imports it once for all of them
IMPORTS = "import numpy as np  # noqa: F401\n\nfrom npattn.exercises import check"


def _exercise_cells(number: int, ex, solved: bool) -> list:
    hints = "\n".join(
        f"<details><summary>Hint {i}</summary>\n\n{h}\n\n</details>\n"
        for i, h in enumerate(ex.hints, 1)
    )
    text = f"## {number}. {ex.title}\n\nRead first: `docs/{ex.docs}`.\n\n{hints}"
    code = ex.solution_source if solved else ex.stub_source
    code = code.replace("import numpy as np\n", "", 1).lstrip("\n")  # the notebook's first cell
    return [  # fixed cell ids, so that a rebuild changes nothing that did not change
        new_markdown_cell(text, id=f"{ex.name}-text"),
        new_code_cell(code.rstrip("\n"), id=f"{ex.name}-code"),
        new_code_cell(f'check("{ex.name}", {ex.name})', id=f"{ex.name}-check"),
    ]


def build(part: str, solved: bool = False):
    """The notebook of one part (a key of npattn.exercises.PARTS)."""
    cells = [
        new_markdown_cell(INTRO.format(title=PARTS[part]), id="intro"),
        new_code_cell(IMPORTS, id="imports"),
    ]
    numbered = list(enumerate(all_exercises(), 1))
    for number, ex in numbered:
        if ex.part == part:
            cells += _exercise_cells(number, ex, solved)
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def render(part: str, solved: bool = False) -> str:
    return nbformat.writes(build(part, solved)) + "\n"


INDEX_INTRO = """\
# Exercises

Write each backward pass yourself, and let a checker say precisely what went wrong. Every
exercise gives the exact signature and shapes, two or three graded hints and a reference
solution (shown only when you ask for it). The checker, `npattn.exercises.check`, draws
inputs with Hypothesis (queries and keys of different lengths, several heads, large logits,
fully masked rows), compares your outputs with npattn's own ops in float64 at a relative
tolerance of 1e-9, and shrinks a failure to the smallest input. Its verdict names that
input, the wrong output, the index, the expected and the computed value, and, when your
outputs are those of a usual mistake from the exercise's catalogue, the mistake's name and
a hint. A function that raises, returns the wrong shape or NaN, or changes its input gets a
verdict too, never a traceback.

The checker compares outputs only, never how they were computed: a loop, an einsum or a call
to npattn's own op all pass when the numbers agree. Where an exercise asks for a particular
algorithm (the online softmax, the tiled backward, MLA's absorbed weights), following it is
yours to keep honest. `check` has no time limit: a function that never returns keeps it
waiting (Ctrl-C stops it).

From a terminal (`pip install 'npattn[exercises]'` brings Hypothesis):

```sh
python -m npattn exercises list                     # the exercises; status once started
python -m npattn exercises start softmax_backward   # writes exercises/softmax_backward.py
python -m npattn exercises check softmax_backward exercises/softmax_backward.py
python -m npattn exercises hint softmax_backward    # the next hint (or --all, --level N)
python -m npattn exercises solution softmax_backward
```

From Python or a notebook, `check("softmax_backward", softmax_backward)` returns a `Result`
with `.passed`, `.mistake` and `.message`; it prints in a terminal and renders in a notebook.
One notebook per part, with every exercise in order, is in `notebooks/`
(`exercises_1_chapter3.ipynb`, `exercises_2_backward.ipynb`, `exercises_3_beyond.ipynb`).
"""


def render_index() -> str:
    """docs/exercises/index.md: the introduction and one table per part."""
    lines = [INDEX_INTRO]
    part = None
    for number, ex in enumerate(all_exercises(), 1):
        if ex.part != part:
            part = ex.part
            lines += ["", f"## {PARTS[part]}", "", "| | Exercise | Page | Mistakes it names |"]
            lines += ["|---|---|---|---|"]
        page = f"[{ex.docs}](../{ex.docs})"
        mistakes = "; ".join(m.name for m in ex.mistakes)
        anchor = f'<a id="{ex.name}"></a>'
        lines.append(f"| {number} | {anchor}`{ex.name}`: {ex.title} | {page} | {mistakes} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale notebooks")
    args = parser.parse_args(argv)
    stale = []
    targets = [(OUT / name, render(part)) for part, name in FILES.items()]
    for path, text in targets + [(INDEX, render_index())]:
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("out of date (python tools/make_notebooks.py rewrites them): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
