"""The docs cannot drift from the code.

Every ```python block of every page runs, each page's blocks in order in one namespace, with
the same functions the docs build uses (docs/hooks/pycode.py). And the site builds with
`mkdocs build --strict`, with a page for every stage and every backward derivation, the
maths rendered to MathML and the figures drawn.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
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


# a path into the repository named in prose or code: tests/..., npattn/..., benchmarks/...
CITED_PATH = re.compile(r"(?<![\w/.-])((?:tests|tools|benchmarks|docs)/[\w./-]*\w)")


@pytest.mark.parametrize(
    "page", [*PAGES, ROOT / "README.md"], ids=lambda p: str(p.relative_to(ROOT))
)
def test_cited_repository_files_exist(page):
    """Every tests/..., tools/..., benchmarks/... path a page (or the README) cites exists,
    in the repository or (a link) beside the page."""
    missing = [
        path for path in CITED_PATH.findall(page.read_text())
        if not any((base / path).exists() for base in (ROOT, page.parent))
    ]  # fmt: skip
    assert not missing, missing


def test_cited_paths_are_found():
    text = "checked in tests/test_sdpa.py and (tests/no_such.py), not in xtests/a.py"
    assert CITED_PATH.findall(text) == ["tests/test_sdpa.py", "tests/no_such.py"]


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
    assert rendered.count('```{.text .output title="Output"}') == 1
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


# -- search from file:// (mkdocs-material's offline plugin and a vendored Worker shim) -------

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
    None,
)


def test_search_index_is_inlined_as_a_script(site):
    """From file:// the theme loads search/search_index.js (a script), not the JSON."""
    data = json.loads((site / "search" / "search_index.json").read_text())
    script = (site / "search" / "search_index.js").read_text()
    prefix = "var __index = "
    assert script.startswith(prefix), script[:40]
    assert json.loads(script[len(prefix) :]) == data
    titles = {doc["title"] for doc in data["docs"]}
    assert "Scaled dot-product attention backward" in titles


def test_every_page_loads_the_worker_shim_from_the_site(site):
    """A Web Worker cannot start from file://: the shim must be local and load first."""
    shim = site / "js" / "iframe-worker-shim.js"
    assert "window.Worker=" in shim.read_text()
    for page in site.rglob("*.html"):
        if page.name == "404.html":  # served by a web server only, with absolute paths
            continue
        html = page.read_text()
        srcs = re.findall(r'<script[^>]+src="([^"]+)"', html)
        assert not [s for s in srcs if re.match(r"(?:https?:)?//", s)], page
        for src in srcs:
            assert (page.parent / src.split("?")[0]).resolve().is_file(), (page, src)
        bundle = next(i for i, s in enumerate(srcs) if "/bundle." in "/" + s)
        assert any(s.endswith("iframe-worker-shim.js") for s in srcs[:bundle]), page


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium to open the site from disk")
def test_search_finds_pages_when_the_site_is_opened_from_disk(site):
    """Headless Chromium opens site/index.html?q=... from file:// and lists the hits."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=8000",
         "--dump-dom", (site / "index.html").as_uri() + "?q=softmax"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = re.search(r'md-search-result__meta">(\d+) matching document', result.stdout)
    assert found and int(found.group(1)) > 0, result.stdout[-2000:]


# -- nothing cut off at a 1280 px window ----------------------------------------------------

# The content column at 1280 px is 938 px wide (the page's table of contents sits in the left
# sidebar, mkdocs.yml toc.integrate): 110 columns of code at 8.2 px, and about 85 characters
# of display maths at 17.6 px. The limits leave a margin; printed output wraps (extra.css).
MAX_CODE_COLUMNS = 105
MAX_DISPLAY_MATH_CHARS = 60  # visible characters of one display formula
spec = importlib.util.spec_from_file_location("docs_latex_math", DOCS / "hooks" / "latex_math.py")
latex_math = importlib.util.module_from_spec(spec)
spec.loader.exec_module(latex_math)
spec = importlib.util.spec_from_file_location("docs_overflow", ROOT / "tools" / "docs_overflow.py")
docs_overflow = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs_overflow)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_code_lines_fit_the_column(page):
    text = page.read_text()
    too_long = [
        line for b in pycode.fenced_blocks(text) for line in b.code.split("\n")
        if len(line) > MAX_CODE_COLUMNS
    ]  # fmt: skip
    for m in re.finditer(r"<!--\s*source:\s*([\w.]+)\s*-->", text):
        too_long += [ln for ln in pycode.source_block(m.group(1)).split("\n")
                     if len(ln) > MAX_CODE_COLUMNS]  # fmt: skip
    assert not too_long, too_long


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_display_maths_fits_the_column(page):
    """Each $$...$$ formula, as rendered, is short enough: long ones are split into lines."""
    prose = "\n".join(
        line for i, line in enumerate(page.read_text().split("\n"))
        if not any(b.start <= i <= b.end for b in pycode.fenced_blocks(page.read_text()))
    )  # fmt: skip
    for m in re.finditer(r"\$\$(.+?)\$\$", prose, re.S):
        for row in display_rows(m.group(1)):
            assert len(row) <= MAX_DISPLAY_MATH_CHARS, (len(row), m.group(1).strip()[:80])


def display_rows(tex: str) -> list[str]:
    """The visible text of each row of a display formula (one row unless it is aligned)."""
    root = ET.fromstring(latex_math.to_mathml(tex, True))
    rows = [tr for tr in root.iter() if tr.tag.endswith("}mtr")] or [root]
    return ["".join(row.itertext()) for row in rows]


def test_an_aligned_formula_is_measured_row_by_row():
    tex = "\\begin{aligned} a &= b + c \\\\ &= d \\end{aligned}"
    assert display_rows(tex) == ["a=b+c", "=d"]


def test_the_column_limits_catch_a_long_formula():
    long = "a_1 + a_2 + " * 12
    shown = "".join(ET.fromstring(latex_math.to_mathml(long, True)).itertext())
    assert len(shown) > MAX_DISPLAY_MATH_CHARS


# -- every page in the browser, on a desktop (1280 px) and on a phone (390 px) -------------

spec = importlib.util.spec_from_file_location("docs_measure", ROOT / "tools" / "measure_docs.py")
measure_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(measure_docs)
PHONE, DESKTOP = 390, 1280
MAX_WIDE_FORMULAS = 3  # display formulas wider than a phone, over the whole site
INCLUDED = {"benchmarks/cpu.md", "benchmarks/gpu.md"}  # parts of benchmarks.md, not pages
SITE_PAGES = {page_id(p).removesuffix(".md") + ".html" for p in PAGES} - {
    p.removesuffix(".md") + ".html" for p in INCLUDED
}


def assert_every_page_is_readable(checks: dict, width: int) -> None:
    """What holds at any width: every page reported, code keeps its lines, printed output
    wraps, figures link to their file, tables scroll in their own box, the maths font loads."""
    assert None not in checks.values(), [p for p, c in checks.items() if c is None]
    for page, c in checks.items():
        assert c["doc_width"] <= width, (page, "the page scrolls sideways", c["doc_width"])
        assert c["wrapping_code"] == 0, (page, "code blocks that wrap their lines")
        assert c["unwrapped_output"] == 0, (page, "printed output that does not wrap")
        assert c["unlinked_figures"] == 0, (page, "figures without a link to their file")
        assert c["tables_without_scroll_box"] == 0, (page, "tables that would scroll the page")
        assert c["math_font"] in (True, None), (page, "STIX Two Math did not load")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium to measure the pages")
def test_every_page_at_1280_px(site):
    """On a desktop nothing is cut off: formulas, code and tables fit the content column."""
    checks = measure_docs.page_checks(site, DESKTOP)
    assert set(checks) == SITE_PAGES
    assert_every_page_is_readable(checks, DESKTOP)
    overflowing = {p: c["overflow"] for p, c in checks.items() if c["overflow"]}
    assert overflowing == {}


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium to measure the pages")
def test_every_page_at_390_px(site):
    """On a phone no page scrolls sideways (code and tables scroll in their own boxes), and
    long display formulas are split onto rows: at most a handful are wider than the screen."""
    checks = measure_docs.page_checks(site, PHONE)
    assert set(checks) == SITE_PAGES
    assert_every_page_is_readable(checks, PHONE)
    wide = [(p, f) for p, c in checks.items() for f in c["formulas"] if f["px"] > PHONE]
    assert len(wide) <= MAX_WIDE_FORMULAS, wide
    assert sum(len(c["formulas"]) for c in checks.values()) > 50  # the formulas were measured


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium to measure the pages")
def test_a_phone_is_measured_at_its_own_width(site):
    """Headless Chromium will not lay a page out narrower than 500 px; the tools measure a
    phone in an iframe of its width instead."""
    script = "window.addEventListener('load', () => report(window.innerWidth));"
    widths = docs_overflow.run_in_pages(site, PHONE, script, ["index.html"])
    assert widths == {"index.html": PHONE}


def test_the_maths_font_is_bundled_with_its_licence():
    css = (DOCS / "css" / "extra.css").read_text()
    font = re.search(r'url\("\.\./(fonts/[^"]+\.woff2)"\)', css)
    assert font, "no @font-face for the maths font"
    assert (DOCS / font.group(1)).read_bytes()[:4] == b"wOF2"
    assert "SIL Open Font License" in (DOCS / "fonts" / "STIXTwoMath-OFL.txt").read_text()
    assert re.search(r'math \{\s*font-family: "STIX Two Math"', css)


def test_site_diagrams_are_drawn_and_used(site):
    from npattn.chapter.diagrams import DIAGRAMS

    for name in DIAGRAMS:
        assert (site / "figures" / f"{name}.svg").read_bytes().lstrip().startswith(b"<?xml")
    assert 'src="figures/attention_graph.svg"' in (site / "index.html").read_text()
    assert 'src="../figures/attention_graph.svg"' in (site / "backward/sdpa.html").read_text()
    assert 'src="../figures/tiling_grid.svg"' in (site / "backward/tiled.html").read_text()


@pytest.mark.parametrize("page", ["index.md", "backward/sdpa.md"])
def test_the_backward_card_is_on_the_home_and_sdpa_pages(page):
    text = (DOCS / page).read_text()
    card = text[text.index('!!! abstract "The attention backward on one card"') :]
    for line in ("dV = ", "dP = dO\\, V^{\\top}", "dS = P \\odot \\left(dP - \\mathrm{rowsum}(dO",
                 "dQ = s\\, dS\\, K", "dK = s\\, dS^{\\top} Q"):  # fmt: skip
        assert line in card[:800], line


def test_sdpa_page_walks_the_backward_with_computed_numbers(site):
    from npattn.chapter.backward_walkthrough import backward_walkthrough

    html = (site / "backward" / "sdpa.html").read_text()
    walk = backward_walkthrough()
    for step in walk.steps:
        assert f"{step.name} = {step.formula}" in html, step.name
    first = f"{walk.steps[-1].analytic[1, 0]:.4f}"  # dk of "journey", printed in the build
    assert first in html


def test_benchmarks_page_has_one_title_and_its_maths_rendered(site):
    """The included result files are sections of the page, and T^2 is maths, not text."""
    html = (site / "benchmarks.html").read_text()
    assert len(re.findall(r"<h1[ >]", html)) == 1
    text = re.sub(r"<math.*?</math>|<code.*?</code>", "", html, flags=re.S)
    assert "T^2" not in text and "T^p" not in text
