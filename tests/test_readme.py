"""The README's examples run: its ```python blocks, in order, in one namespace."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    pytest.importorskip("torch")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"README.md block {i + 1}", "exec"), namespace)  # noqa: S102
    assert namespace["report"].passed


def test_readme_commands_exist_in_the_makefile():
    makefile = (README.parent / "Makefile").read_text()
    for target in re.findall(r"`make ([\w-]+)`", README.read_text()):
        assert re.search(rf"^{target}:", makefile, flags=re.M), target
