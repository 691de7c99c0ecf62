"""The README's examples run: each ```python block on its own, in a fresh namespace, as a
reader would paste it; and its commands exist."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("i", range(len(BLOCKS)), ids=lambda i: f"block {i + 1}")
def test_each_readme_python_block_runs_on_its_own(i):
    if "import torch" in BLOCKS[i]:
        pytest.importorskip("torch")
    namespace = {"__name__": "__readme__"}
    exec(compile(BLOCKS[i], f"README.md block {i + 1}", "exec"), namespace)  # noqa: S102
    if "report" in namespace:
        assert namespace["report"].passed


def test_readme_commands_exist_in_the_makefile():
    makefile = (README.parent / "Makefile").read_text()
    for target in re.findall(r"`make ([\w-]+)`", README.read_text()):
        assert re.search(rf"^{target}:", makefile, flags=re.M), target


def test_readme_commands_use_the_environment_make_creates():
    """Every `python -m npattn` the README shows runs through .venv/bin/python."""
    text = README.read_text()
    bare = re.findall(r"(?<![/\w])python -m npattn", text)
    assert not bare, bare
    assert ".venv/bin/python -m npattn" in text
