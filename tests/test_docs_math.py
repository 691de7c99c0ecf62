"""docs/hooks/latex_math.py: LaTeX in the Markdown becomes MathML at build time."""

import importlib.util
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("latex2mathml")
markdown = pytest.importorskip("markdown")

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "docs" / "hooks" / "latex_math.py"
spec = importlib.util.spec_from_file_location("docs_latex_math", HOOK)
latex_math = importlib.util.module_from_spec(spec)
spec.loader.exec_module(latex_math)


def render(text: str) -> str:
    md = markdown.Markdown(extensions=[latex_math.MathExtension(), "fenced_code"])
    return md.convert(text)


def maths(html: str) -> list[ET.Element]:
    """Every <math> element of the HTML, parsed."""
    out, start = [], 0
    while (i := html.find("<math", start)) >= 0:
        j = html.index("</math>", i) + len("</math>")
        out.append(ET.fromstring(html[i:j]))
        start = j
    return out


def tags(el: ET.Element) -> list[str]:
    return [e.tag.split("}")[-1] for e in el.iter()]


def test_inline_maths_becomes_mathml():
    html = render("The weight $\\alpha_{2i}$ of token $i$.")
    found = maths(html)
    assert len(found) == 2
    assert all(m.get("display") == "inline" for m in found)
    assert "msub" in tags(found[0])
    assert "$" not in html


def test_display_block_spanning_lines():
    html = render("Text.\n\n$$\n\\frac{a}{b}\n  + c\n$$\n\nMore.")
    (m,) = maths(html)
    assert m.get("display") == "block" and "mfrac" in tags(m)
    assert '<div class="math-display">' in html
    assert "<p>More.</p>" in html


def test_display_maths_inside_a_sentence():
    (m,) = maths(render("so $$x^2$$ holds"))
    assert m.get("display") == "block" and "msup" in tags(m)


def test_underscores_and_braces_reach_latex_untouched():
    html = render("$a_i b_j = \\{1\\}$ and $x_1 * y_2 * z$")
    assert "<em>" not in html and "<strong>" not in html
    first = maths(html)[0]
    assert tags(first).count("msub") == 2
    assert "{" in "".join(first.itertext())


def test_code_spans_and_fenced_code_are_left_alone():
    html = render("Use `$x$` here.\n\n```python\ns = '$y$ and $z$'\n```\n")
    assert maths(html) == []
    assert "<code>$x$</code>" in html and "$y$ and $z$" in html


def test_dollars_that_are_not_maths():
    html = render("It costs $5 and $6 today, or \\$7 and \\$8.")
    assert maths(html) == []
    assert "$5 and $6" in html and "$7 and $8" in html


def test_html_special_characters_are_escaped():
    (m,) = maths(render("$a < b$"))  # parses as XML, so '<' was escaped
    assert "<" in "".join(m.itertext())


@pytest.mark.parametrize(
    "tex, message",
    [
        ("\\foo{x}", "unknown command"),
        ("\\frac{a}", "needs 2 arguments"),
        ("\\frac{a", "unclosed"),
        ("a}", "unbalanced"),
        ("x^", "latex2mathml"),
        ("\\begin{aligned} a &= b \\end{aligned}", "display maths only"),
        ("  ", "empty"),
    ],
)
def test_bad_latex_is_an_error_naming_it(tex, message):
    with pytest.raises(latex_math.LatexError, match=message):
        latex_math.to_mathml(tex)


def test_bad_latex_in_a_page_warns_and_shows_the_source(caplog):
    with caplog.at_level(logging.WARNING, logger="mkdocs.hooks.latex_math"):
        html = render("A bad one: $\\frac{x$.")
    assert '<code class="math-error">\\frac{x</code>' in html
    assert any("unclosed" in r.getMessage() for r in caplog.records)


def test_unclosed_display_block_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="mkdocs.hooks.latex_math"):
        render("$$\nx + y\n\nnext paragraph")
    assert any("unclosed $$" in r.getMessage() for r in caplog.records)


PAGES = sorted(p for p in (ROOT / "docs").rglob("*.md") if "hooks" not in p.parts)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT / "docs")))
def test_every_formula_of_the_docs_renders(page, caplog):
    text = page.read_text()
    with caplog.at_level(logging.WARNING, logger="mkdocs.hooks.latex_math"):
        html = render(text)
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    assert "math-error" not in html


def direct(el: ET.Element) -> list[tuple[str, str]]:
    """(tag, text) of every element, in document order."""
    return [(e.tag.split("}")[-1], (e.text or "").strip()) for e in el.iter()]


def test_a_prime_follows_its_symbol_instead_of_a_superscript():
    m = ET.fromstring(latex_math.to_mathml("m' = \\ell'"))
    assert "msup" not in tags(m)
    assert direct(m).count(("mo", "\u2032")) == 2


def test_minus_infinity_is_a_prefix_minus_on_a_symbol():
    m = ET.fromstring(latex_math.to_mathml("m = -\\infty"))
    assert ("mo", "\u221e") not in direct(m)
    row = next(e for e in m.iter() if [c.tag.split("}")[-1] for c in e] == ["mo", "mi"])
    assert [(c.text or "").strip() for c in row] == ["\u2212", "\u221e"]


@pytest.mark.parametrize("tex", ["a += b", "a \\mathrel{+}= b"])
def test_plus_equals_is_one_operator(tex):
    m = ET.fromstring(latex_math.to_mathml(tex))
    assert [t for t in direct(m) if t[0] == "mo"] == [("mo", "+=")]


def test_log_is_followed_by_a_thin_space_unless_a_parenthesis_follows():
    spaced = ET.fromstring(latex_math.to_mathml("m + \\log \\ell"))
    names = tags(spaced)
    assert names[names.index("mi", names.index("mo")) + 1] == "mspace"
    assert "mspace" not in tags(ET.fromstring(latex_math.to_mathml("\\log(x)")))


def test_aligned_rows_become_table_rows_aligned_at_the_ampersand():
    tex = "\\begin{aligned} S &= s\\, Q K^\\top + A, \\\\ P &= \\mathrm{softmax}(S) \\end{aligned}"
    root = ET.fromstring(latex_math.to_mathml(tex, display=True))
    rows = [el for el in root.iter() if el.tag.endswith("}mtr")]
    assert len(rows) == 2
    cells = [[c for c in row if c.tag.endswith("}mtd")] for row in rows]
    assert [[c.get("columnalign") for c in r] for r in cells] == [["right", "left"]] * 2
    assert ["".join(c.itertext()) for c in cells[1]] == ["P", "=softmax(S)"]


def test_an_aligned_cell_is_checked_like_a_formula():
    with pytest.raises(latex_math.LatexError, match="unknown command"):
        latex_math.to_mathml("\\begin{aligned} a &= \\foo{b} \\end{aligned}", display=True)
