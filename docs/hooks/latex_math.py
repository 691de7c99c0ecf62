"""mkdocs hook: LaTeX maths in the Markdown rendered to MathML at build time (latex2mathml).

Nothing is loaded from a CDN: browsers display MathML natively, so the site shows its maths
with no network. Syntax, as in pandoc:

- `$...$` inline: the opening `$` is not followed by a space, the closing `$` is not preceded
  by a space nor followed by a digit (so "costs $5 and $6" stays text). `\\$` is a dollar.
- `$$...$$` display: a paragraph of its own (it may span lines), or inline in a sentence.
- Code spans and fenced code are left alone (they are handled before the maths).

latex2mathml's output is then touched up where browsers draw it wrongly (`_fix_mathml`):
primes, $-\\infty$, `+=` and the space after `\\log`.

latex2mathml accepts unknown commands and unbalanced braces silently, so every formula is
checked (braces, no leftover `\\command`, valid XML, the right number of children in
fractions and scripts); a bad formula is a warning, which `mkdocs build --strict` turns into
an error, naming the formula.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from html import escape

from markdown.blockprocessors import BlockProcessor
from markdown.extensions import Extension
from markdown.inlinepatterns import InlineProcessor

log = logging.getLogger("mkdocs.hooks.latex_math")

MATHML_NS = "{http://www.w3.org/1998/Math/MathML}"
# how many children MathML requires of each layout element
ARITY = {"mfrac": 2, "msub": 2, "msup": 2, "msubsup": 3, "munder": 2, "mover": 2,
         "munderover": 3, "mroot": 2}  # fmt: skip
# priorities among Python-Markdown's inline patterns: after code spans (190), before
# backslash escapes (180), so `\{` and `_` inside maths reach latex2mathml untouched
DISPLAY_INLINE_PRIORITY = 187
INLINE_PRIORITY = 186
BLOCK_PRIORITY = 75  # after indented code blocks (80), before paragraphs (10)

INLINE_RE = r"(?<![\\$])\$(?![\s$])((?:[^$\\\n]|\\.|\n(?!\n))+?)(?<![\s\\])\$(?!\d)"
DISPLAY_INLINE_RE = r"(?<!\\)\$\$(.+?)(?<!\\)\$\$"


class LatexError(ValueError):
    """A formula latex2mathml cannot render faithfully."""


def _check_braces(tex: str) -> None:
    depth = 0
    for m in re.finditer(r"\\.|[{}]", tex):
        token = m.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth < 0:
                raise LatexError(f"unbalanced '}}' at {m.start()} in {tex!r}")
    if depth:
        raise LatexError(f"{depth} unclosed '{{' in {tex!r}")


def _check_mathml(mathml: str, tex: str) -> None:
    try:
        root = ET.fromstring(mathml)
    except ET.ParseError as e:
        raise LatexError(f"latex2mathml gave invalid MathML ({e}) for {tex!r}") from None
    for el in root.iter():
        tag = el.tag.removeprefix(MATHML_NS)
        if el.text and "\\" in el.text:
            raise LatexError(f"unknown command {el.text.strip()!r} in {tex!r}")
        if tag in ARITY and len(el) != ARITY[tag]:
            raise LatexError(f"<{tag}> needs {ARITY[tag]} arguments, got {len(el)} in {tex!r}")


PRIMES = {"\u2032", "\u2033"}  # ′ ″
FUNCTIONS = {"log", "exp", "ln"}  # \log x: TeX puts a thin space before an ordinary symbol
THIN_SPACE = "0.1667em"


def _mo_text(el) -> str | None:
    """The text of an <mo>, also for latex2mathml's <mo><mrow><mo>+</mo></mrow></mo>."""
    if el.tag != MATHML_NS + "mo":
        return None
    if len(el) == 1 and el[0].tag == MATHML_NS + "mrow" and len(el[0]) == 1:
        return _mo_text(el[0][0])
    return (el.text or "").strip() if len(el) == 0 else None


def _fix_children(parent) -> None:
    """Rewrite the children of one element; see _fix_mathml."""
    kids, out, i = list(parent), [], 0
    while i < len(kids):
        el, nxt = kids[i], kids[i + 1] if i + 1 < len(kids) else None
        tag = el.tag.removeprefix(MATHML_NS)
        if tag == "msup" and len(el) == 2 and (el[1].text or "").strip() in PRIMES:
            # x' -> x then the prime itself: the glyph is already raised, msup raises it twice
            out += [el[0], ET.Element(MATHML_NS + "mo", lspace="0", rspace="0")]
            out[-1].text = el[1].text.strip()
        elif tag == "mo" and (el.text or "").strip() == "\u221e":
            out.append(ET.Element(MATHML_NS + "mi"))  # ∞ is a symbol, not an operator
            out[-1].text = "\u221e"
        elif _mo_text(el) == "\u2212" and nxt is not None and (nxt.text or "").strip() == "\u221e":
            # -∞: a prefix minus, kept next to its ∞ (an infix one would be spaced)
            row = ET.Element(MATHML_NS + "mrow")
            row.append(el)
            row.append(ET.Element(MATHML_NS + "mi"))
            row[-1].text = "\u221e"
            out.append(row)
            i += 1
        elif _mo_text(el) == "+" and nxt is not None and _mo_text(nxt) == "=":
            out.append(ET.Element(MATHML_NS + "mo"))  # += as one operator, not "+ ="
            out[-1].text = "+="
            i += 1
        elif tag == "mi" and (el.text or "").strip() in FUNCTIONS:
            out.append(el)
            if nxt is not None and _mo_text(nxt) != "(":
                out.append(ET.Element(MATHML_NS + "mspace", width=THIN_SPACE))
        else:
            out.append(el)
        i += 1
    if out != kids:
        for el in kids:
            parent.remove(el)
        parent.extend(out)


def _fix_mathml(mathml: str) -> str:
    """Touch up latex2mathml's output where browsers draw it wrongly.

    x' is <msup> with a prime (drawn tiny and too high): it becomes x followed by the prime.
    In -∞, ∞ is an <mo> (spaced like an operator): it becomes an <mi>, and the minus is
    grouped with it. `+=` (also written \\mathrel{+}=) becomes one <mo>. \\log x gets the thin
    space TeX puts there.
    """
    root = ET.fromstring(mathml)
    for el in list(root.iter()):
        if len(el):
            _fix_children(el)
    ET.register_namespace("", MATHML_NS.strip("{}"))
    return ET.tostring(root, encoding="unicode")


ALIGNED_RE = re.compile(r"\A\\begin\{aligned\}(.*)\\end\{aligned\}\Z", re.S)


def aligned_rows(tex: str) -> list[list[str]] | None:
    """The cells of `\\begin{aligned} a &= b \\\\ &= c \\end{aligned}`, row by row, or None.

    Rows are split at `\\\\`, cells at `&`; each cell must be a formula of its own (no
    `\\left` in one row closed by `\\right` in the next).
    """
    m = ALIGNED_RE.match(tex.strip())
    if m is None:
        return None
    rows = [r for r in re.split(r"\\\\", m.group(1)) if r.strip()]
    return [[c.strip() for c in re.split(r"(?<!\\)&", row)] for row in rows]


def _aligned_mathml(rows: list[list[str]]) -> str:
    """An <mtable> with one <mtr> per row; cells alternately right- and left-aligned, as in
    amsmath's `aligned`, each in display style."""
    from latex2mathml.converter import convert

    math = ET.Element(MATHML_NS + "math", display="block")
    table = ET.SubElement(math, MATHML_NS + "mtable", displaystyle="true")
    for cells in rows:
        tr = ET.SubElement(table, MATHML_NS + "mtr")
        for k, cell in enumerate(cells):
            side = "right" if k % 2 == 0 else "left"
            td = ET.SubElement(tr, MATHML_NS + "mtd", columnalign=side)
            td.set("class", f"align-{side}")
            row = ET.SubElement(td, MATHML_NS + "mrow", displaystyle="true")
            if not cell:
                continue
            if k % 2 == 1:
                cell = "{}" + cell  # a relation after & is spaced as an infix one, as in TeX
            _check_braces(cell)
            try:
                cell_mathml = convert(cell, display="block")
            except Exception as e:  # latex2mathml raises its own exception types
                raise LatexError(f"latex2mathml: {type(e).__name__} {e} in {cell!r}") from None
            _check_mathml(cell_mathml, cell)
            row.extend(list(ET.fromstring(cell_mathml)))
    ET.register_namespace("", MATHML_NS.strip("{}"))
    return ET.tostring(math, encoding="unicode")


def to_mathml(tex: str, display: bool = False) -> str:
    """LaTeX -> a <math> element (display="block" or "inline"); LatexError if it is bad.

    A display formula may be `\\begin{aligned} ... \\end{aligned}`: rows split at `\\\\`,
    aligned at `&` (latex2mathml itself draws it as one row).
    """
    from latex2mathml.converter import convert

    tex = tex.strip()
    if not tex:
        raise LatexError("empty formula")
    _check_braces(tex)
    rows = aligned_rows(tex)
    if rows is not None:
        if not display:
            raise LatexError(f"aligned is for display maths only: {tex[:60]!r}")
        return _fix_mathml(_aligned_mathml(rows))
    try:
        mathml = convert(tex, display="block" if display else "inline")
    except Exception as e:  # latex2mathml raises its own exception types
        raise LatexError(f"latex2mathml: {type(e).__name__} {e} in {tex!r}") from None
    _check_mathml(mathml, tex)
    return _fix_mathml(mathml)


def _render(md, tex: str, display: bool) -> str:
    """A placeholder for the MathML in md's HTML stash, or the TeX as code after a warning."""
    try:
        html = to_mathml(tex, display)
    except LatexError as e:
        log.warning("LaTeX: %s", e)
        html = f'<code class="math-error">{escape(tex)}</code>'
    return md.htmlStash.store(html)


class _InlineMath(InlineProcessor):
    def __init__(self, pattern, md, display):
        super().__init__(pattern, md)
        self.display = display

    def handleMatch(self, m, data):
        return _render(self.md, m.group(1), self.display), m.start(0), m.end(0)


class _DisplayMathBlock(BlockProcessor):
    """A paragraph that starts with $$: everything up to the closing $$ is one formula."""

    def test(self, parent, block):
        return block.lstrip().startswith("$$")

    def run(self, parent, blocks):
        block = blocks.pop(0).lstrip()
        end = block.find("$$", 2)
        if end < 0:
            log.warning("LaTeX: unclosed $$ in %r", block[:60])
            end = len(block)
        div = ET.SubElement(parent, "div", {"class": "math-display"})
        div.text = _render(self.parser.md, block[2:end], display=True)
        rest = block[end + 2 :].strip()
        if rest:
            blocks.insert(0, rest)


class MathExtension(Extension):
    """Registers the block and inline processors, and `\\$` as an escaped character."""

    def extendMarkdown(self, md):
        if "$" not in md.ESCAPED_CHARS:
            md.ESCAPED_CHARS.append("$")
        md.parser.blockprocessors.register(
            _DisplayMathBlock(md.parser), "latex_math_display", BLOCK_PRIORITY
        )
        md.inlinePatterns.register(
            _InlineMath(DISPLAY_INLINE_RE, md, display=True),
            "latex_math_display_inline",
            DISPLAY_INLINE_PRIORITY,
        )
        md.inlinePatterns.register(
            _InlineMath(INLINE_RE, md, display=False), "latex_math_inline", INLINE_PRIORITY
        )


def on_config(config):
    """mkdocs hook: add the extension to the site's Markdown."""
    config.markdown_extensions.append(MathExtension())
    return config
