"""The pages beyond chapter 3 (docs/modern/): each is in the nav, derives its stage with code
included from the source and runnable examples, and its maths renders.

tests/test_docs.py runs every page's python blocks and builds the whole site strictly; this
file checks what is particular to these pages without another build.
"""

import importlib.util
import logging
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MODERN = sorted((DOCS / "modern").glob("*.md"))
STAGES = ["attention", "rope", "rmsnorm", "gqa", "mla", "deepseek_mla", "sliding_window"]
STAGES += ["softcap", "sinks", "qwen3"]


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


pycode = _load("docs_pycode_modern", DOCS / "hooks" / "pycode.py")


def test_every_stage_has_a_page_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    section = nav[nav.index('"Beyond chapter 3":') :]
    assert [p.stem for p in MODERN] == sorted(STAGES + ["index", "kv_cache"])
    for page in MODERN:
        assert f"modern/{page.name}" in section, page.name


@pytest.mark.parametrize("stage", STAGES)
def test_stage_pages_map_symbols_include_source_and_run_code(stage):
    text = (DOCS / "modern" / f"{stage}.md").read_text()
    assert "## Symbols" in text and "| symbol | code | shape |" in text
    names = re.findall(r"<!--\s*source:\s*([\w.]+)\s*-->", text)
    assert names, "no code included from the source"
    for name in names:
        assert pycode.source_block(name).startswith('```py title="npattn/')
    assert pycode.python_blocks(text), "no python block"


@pytest.mark.parametrize("stage", ["rope", "rmsnorm", "gqa", "mla", "deepseek_mla",
                                   "sliding_window", "softcap", "sinks", "qwen3"])  # fmt: skip
def test_stage_pages_check_against_finite_differences(stage):
    code = "\n".join(b.code for b in pycode.python_blocks((DOCS / "modern" / f"{stage}.md")
                                                          .read_text()))  # fmt: skip
    assert "check_op(" in code or "check_module(" in code


@pytest.mark.parametrize("page", MODERN, ids=lambda p: p.name)
def test_maths_renders(page, caplog):
    pytest.importorskip("latex2mathml")
    import markdown

    latex_math = _load("docs_latex_math_modern", DOCS / "hooks" / "latex_math.py")
    md = markdown.Markdown(
        extensions=[latex_math.MathExtension(), "tables", "pymdownx.superfences", "admonition"]
    )
    with caplog.at_level(logging.WARNING):
        html = md.convert(page.read_text())
    assert not [r for r in caplog.records if "LaTeX" in r.getMessage()]
    assert "<math" in html and "math-error" not in html


def test_api_and_readme_point_at_the_modern_stages():
    api = (DOCS / "api.md").read_text()
    for name in ("GroupedQueryAttention", "MultiHeadLatentAttention", "MultiHeadAttentionWithSWA",
                 "Qwen3Attention", "rope_forward", "rmsnorm_forward", "sliding_window_mask",
                 "softcap_forward", "softmax_with_sink_forward", "npattn.beyond.demo"):  # fmt: skip
        assert name in api, name
    assert "docs/modern/" in (ROOT / "README.md").read_text()
    assert "modern/index.md" in (DOCS / "index.md").read_text()
