"""The docs cannot drift from the code.

Every ```python block of every page runs, each page's blocks in order in one namespace, with
the same functions the docs build uses (docs/hooks/pycode.py). And the site builds with
`mkdocs build --strict`, with a page for every stage and every backward derivation, the
maths rendered to MathML and the figures drawn.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
spec = importlib.util.spec_from_file_location("docs_pycode", DOCS / "hooks" / "pycode.py")
pycode = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = pycode  # dataclasses look their module up there
spec.loader.exec_module(pycode)

PAGES = sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)
STAGES = ["simple", "trainable", "causal", "dropout", "causal_attention", "multihead", "efficient"]
BACKWARD = ["index", "softmax", "linear", "masks", "dropout", "heads", "sdpa", "causal", "tiled"]
WITH_EXAMPLES = [f"stages/{s}.md" for s in STAGES] + [
    f"backward/{b}.md" for b in BACKWARD
] + ["index.md", "numerics.md", "testing.md"]  # fmt: skip


def page_id(page: Path) -> str:
    return str(page.relative_to(DOCS))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_python_blocks_run(page):
    blocks = pycode.python_blocks(page.read_text())
    pycode.run_blocks(blocks, str(page))


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_teaching_pages_have_code_that_runs(name):
    assert pycode.python_blocks((DOCS / name).read_text()), f"{name} has no ```python block"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_source_directives_resolve(page):
    for m in re.finditer(r"<!--\s*source:\s*([\w.]+)\s*-->", page.read_text()):
        block = pycode.source_block(m.group(1))
        assert block.startswith('```py title="npattn/'), block[:80]


def test_fenced_blocks_are_found_with_their_lines():
    text = "intro\n```python\nx = 1\n```\n\n  ```python title='t'\n  y = 2\n  ```\n```py\nz\n```\n"
    blocks = pycode.fenced_blocks(text)
    assert [(b.lang, b.start, b.end) for b in blocks] == [
        ("python", 1, 3),
        ("python", 5, 7),
        ("py", 8, 10),
    ]
    assert blocks[1].code == "y = 2" and blocks[1].indent == "  "
    assert [b.code for b in pycode.python_blocks(text)] == ["x = 1", "y = 2"]
    with pytest.raises(ValueError, match="line 1: unclosed"):
        pycode.fenced_blocks("```python\nx = 1\n")


def test_blocks_share_a_namespace_and_outputs_follow_them():
    text = "a\n```python\nx = 6\n```\n\n```python\nprint(x * 7)\n```\nb\n"
    rendered = pycode.render(text, "page.md")
    assert rendered.count('```text title="Output"') == 1
    assert rendered.index("print(x * 7)") < rendered.index("42") < rendered.index("\nb")


def test_a_failing_block_points_at_the_markdown_line():
    text = "a\n\n```python\nx = 1\nraise RuntimeError('boom')\n```\n"
    with pytest.raises(RuntimeError, match="boom") as info:
        pycode.run_blocks(pycode.python_blocks(text), "docs/page.md")
    frame = info.traceback[-1]
    assert frame.path == Path("docs/page.md") or str(frame.path) == "docs/page.md"
    assert frame.lineno + 1 == 5  # pytest's lineno is 0-based; the raise is on line 5


def test_numpy_print_options_do_not_leak_between_pages():
    import numpy as np

    before = np.get_printoptions()
    block = pycode.python_blocks("```python\nimport numpy as np\nnp.set_printoptions(3)\n```")
    pycode.run_blocks(block, "page.md")
    assert np.get_printoptions() == before


def test_source_directive_is_the_current_code():
    from npattn.ops.softmax import softmax_backward

    block = pycode.source_block("npattn.ops.softmax.softmax_backward")
    assert block.startswith('```py title="npattn/ops/softmax.py, line ')
    assert softmax_backward.__doc__.splitlines()[0] in block
    with pytest.raises((ImportError, AttributeError)):
        pycode.source_block("npattn.ops.softmax.no_such_function")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    for name in ("mkdocs", "material", "mkdocstrings", "latex2mathml", "matplotlib"):
        pytest.importorskip(name, reason=f"{name} is not installed (pip install '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.mark.parametrize(
    "page", [f"stages/{s}" for s in STAGES] + [f"backward/{b}" for b in BACKWARD]
)
def test_site_has_a_page_per_stage_and_derivation(site, page):
    html = (site / f"{page}.html").read_text()
    assert "<math" in html, "no rendered maths"
    assert '<code class="math-error">' not in html


def test_site_shows_computed_outputs_and_included_source(site):
    html = (site / "stages" / "simple.html").read_text()
    assert html.count(">Output</span>") >= 5
    assert "npattn/ops/simple.py, line" in html
    assert "0.4419" in html  # z^(2), printed by the page's code during the build


def test_site_figures_are_drawn_and_used(site):
    from npattn.chapter.plots import FIGURES

    for name in FIGURES:
        svg = site / "figures" / f"{name}.svg"
        assert svg.read_bytes().lstrip().startswith(b"<?xml"), name
    used = "".join((site / "stages" / f"{s}.html").read_text() for s in STAGES)
    for name in FIGURES:
        assert f'src="../figures/{name}.svg"' in used, name


def test_site_loads_nothing_from_the_network(site):
    external = re.compile(r'<(?:script|link|img)[^>]+(?:src|href)="(?:https?:)?//', re.I)
    for page in site.rglob("*.html"):
        assert not external.search(page.read_text()), page
    for css in site.rglob("*.css"):
        assert "fonts.googleapis" not in css.read_text(), css


def test_api_reference_is_generated(site):
    html = (site / "api.html").read_text()
    for name in ("sdpa_forward", "MultiHeadAttention", "check_module", "chapter_module"):
        assert name in html, name
