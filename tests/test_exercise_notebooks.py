"""The exercise notebooks are in sync with npattn.exercises, and run: executed with the
reference solutions filled in, every check cell says "correct"."""

import importlib.util
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location(
    "make_notebooks", ROOT / "tools" / "make_notebooks.py"
)
make_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_notebooks)


@pytest.mark.parametrize("part", list(make_notebooks.FILES))
def test_the_notebook_on_disk_is_the_built_one(part):
    path = make_notebooks.OUT / make_notebooks.FILES[part]
    assert path.read_text() == make_notebooks.render(part), "python tools/make_notebooks.py"


def _outputs(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(parts)


@pytest.mark.parametrize("part", list(make_notebooks.FILES))
def test_the_solved_notebook_runs_and_every_check_passes(part):
    nb = make_notebooks.build(part, solved=True)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    checks = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("check(")]
    assert checks
    for cell in checks:
        text = _outputs(cell)
        assert ": correct." in text, f"{cell.source}\n{text}"


def test_the_stub_notebook_runs_and_every_check_says_not_yet():
    nb = make_notebooks.build("chapter3")
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    checks = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("check(")]
    for cell in checks:
        text = _outputs(cell)
        assert "not yet." in text and "raised NotImplementedError" in text, text
