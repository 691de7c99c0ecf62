"""The import boundaries of the layout, each checked in a fresh interpreter (sys.modules):
npattn needs numpy alone, the reference ops use no threads and no fast paths, the gradient
checker does not need the modules, and the torch side needs npattn only to convert and test."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# npattn as an empty package: `import npattn.x` then runs npattn/x.py and what it imports, not
# npattn/__init__.py (which loads every public class)
BARE_NPATTN = (
    "import types\n"
    "sys.modules['npattn'] = types.ModuleType('npattn')\n"
    "sys.modules['npattn'].__path__ = ['npattn']\n"
)


def loaded_after(statement: str, bare: bool = False) -> set:
    """The names in sys.modules after `statement` in a fresh interpreter (run from the repo
    root); bare: with npattn's __init__ left out, so only what `statement` needs is loaded."""
    code = "import sys\n" + (BARE_NPATTN if bare else "") + statement
    code += "\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return Loaded(done.stdout.split())


class Loaded(set):
    """Module names, one per printed line; split_at(marker) -> (before, after) for a run that
    printed its sys.modules twice."""

    def __init__(self, lines):
        super().__init__(lines)
        self.lines = lines

    def split_at(self, marker: str):
        i = self.lines.index(marker)
        return set(self.lines[:i]), set(self.lines[i + 1 :])


def test_npattn_imports_nothing_but_numpy():
    loaded = loaded_after("import npattn, npattn.functional")
    for heavy in ("torch", "hypothesis", "matplotlib", "threadpoolctl", "safetensors", "scipy"):
        assert heavy not in loaded, heavy


def test_reference_ops_import_no_threads_and_no_fast_paths():
    ops = ["softmax", "linear", "masks", "dropout", "heads", "sdpa", "simple"]
    loaded = loaded_after("\n".join(f"import npattn.ops.{op}" for op in ops), bare=True)
    assert not any(name.startswith("npattn.fast") for name in loaded)
    assert not any(name.startswith("npattn.modules") for name in loaded)
    assert "concurrent.futures.thread" not in loaded and "threadpoolctl" not in loaded


def test_simple_attention_does_not_need_sdpa():
    assert "npattn.ops.sdpa" not in loaded_after("import npattn.ops.simple", bare=True)


def test_gradcheck_does_not_import_the_modules():
    loaded = loaded_after("import npattn.gradcheck", bare=True)
    assert not any(name.startswith("npattn.modules") for name in loaded)
    assert not any(name.startswith("npattn.chapter") for name in loaded)


def test_torch_port_classes_need_no_npattn_and_convert_and_testing_load_on_first_use():
    """import torch_port.modules (which runs torch_port/__init__, importing the classes and
    the variants) loads no npattn; touching to_npattn and compare loads convert and testing."""
    pytest.importorskip("torch")
    pytest.importorskip("hypothesis")
    first, then = loaded_after(
        "import torch_port.modules, torch_port.variants\n"
        "print('\\n'.join(sorted(sys.modules)))\nprint('---')\n"
        "torch_port.to_npattn, torch_port.compare"
    ).split_at("---")
    assert "npattn" not in first
    assert "torch_port.convert" not in first and "torch_port.testing" not in first
    assert {"npattn", "torch_port.convert", "torch_port.testing"} <= then
