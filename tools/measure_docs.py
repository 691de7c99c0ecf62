"""How many display formulas of the built site are wider than a phone's screen.

Opens every page of site/ in headless Chromium at a 390 px window (a phone) and measures each
display formula (`.math-display`) as drawn: the width of its widest row, whether or not it fits
the column. Prints the pages with formulas wider than the limit and the total:

    python tools/measure_docs.py [SITE_DIR] [--width 390] [--limit 390]

Needs chromium on PATH (tools/docs_overflow.py opens the pages). Used by tests/test_docs.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_overflow import run_in_pages  # noqa: E402

# the drawn width of each display formula: from the leftmost to the rightmost of its children,
# measured inside its own scroll box (so a formula wider than the column is measured whole)
MEASURE = """
window.addEventListener("load", () => setTimeout(() => {
  const widths = [];
  for (const box of document.querySelectorAll(".md-typeset .math-display")) {
    const math = box.querySelector("math");
    if (!math) continue;
    let left = Infinity, right = -Infinity;
    for (const child of math.children) {
      const r = child.getBoundingClientRect();
      left = Math.min(left, r.left);
      right = Math.max(right, r.right);
    }
    const text = math.textContent.replace(/\\s+/g, " ").slice(0, 60);
    if (right > left) widths.push({px: Math.round(right - left), text});
  }
  report(widths);
}, 200));
"""


# everything the browser tests check on one page, at one window width (tests/test_docs.py)
PAGE_CHECK = """
window.addEventListener("load", () => document.fonts.ready.then(() => setTimeout(() => {
  const inner = document.querySelector(".md-content__inner");
  const right = inner.getBoundingClientRect().right;
  const over = [];
  const sel = ".md-typeset .math-display, .md-typeset pre > code, .md-typeset table:not([class])";
  for (const el of document.querySelectorAll(sel)) {
    const box = el.getBoundingClientRect();
    const px = Math.max(el.scrollWidth - el.clientWidth, box.right - right);
    if (px > 1) over.push({tag: el.tagName, px: Math.round(px), text: el.textContent.slice(0, 60)});
  }
  const ws = (el) => getComputedStyle(el).whiteSpace;
  const code = [...document.querySelectorAll(".md-typeset .highlight:not(.output) pre > code")];
  const output = [...document.querySelectorAll(".md-typeset .output pre > code")];
  const imgs = [...document.querySelectorAll(".md-typeset img")];
  const tables = [...document.querySelectorAll(".md-typeset table:not([class])")];
  const scrollbox = (t) => { for (let e = t.parentElement; e; e = e.parentElement) {
    if (e === document.body) return false;
    if (["auto", "scroll"].includes(getComputedStyle(e).overflowX)) return true; } return false; };
  const maths = document.querySelectorAll("math").length;
  const formulas = [];
  for (const box of document.querySelectorAll(".md-typeset .math-display math")) {
    let left = Infinity, right = -Infinity;
    for (const child of box.children) {
      const r = child.getBoundingClientRect();
      left = Math.min(left, r.left);
      right = Math.max(right, r.right);
    }
    const text = box.textContent.slice(0, 60);
    if (right > left) formulas.push({px: Math.round(right - left), text});
  }
  report({
    formulas,
    doc_width: document.documentElement.scrollWidth,
    overflow: over,
    wrapping_code: code.filter((c) => ws(c) !== "pre").length,
    unwrapped_output: output.filter((c) => ws(c) !== "pre-wrap").length,
    unlinked_figures: imgs.filter((i) => !i.closest("a.figure-link")).length,
    tables_without_scroll_box: tables.filter((t) => !scrollbox(t)).length,
    maths,
    math_font: maths ? document.fonts.check('16px "STIX Two Math"') &&
      getComputedStyle(document.querySelector("math")).fontFamily.includes("STIX Two Math") : null,
  });
}, 200)));
"""


def page_checks(site: Path, width: int, pages=None) -> dict[str, dict]:
    """{page: the PAGE_CHECK report}, every page of the built site at one window width."""
    return run_in_pages(site, width, PAGE_CHECK, pages)


def formula_widths(site: Path, width: int = 390, pages=None) -> dict[str, list[dict]]:
    """{page: [{px, text}, ...]}: the drawn width of every display formula of each page."""
    return {k: v or [] for k, v in run_in_pages(site, width, MEASURE, pages).items()}


def wider_than(site: Path, limit: int = 390, width: int = 390, pages=None) -> dict[str, list]:
    """{page: [{px, text}, ...]} of the display formulas wider than `limit` px."""
    found = formula_widths(site, width, pages)
    return {p: [f for f in fs if f["px"] > limit] for p, fs in found.items() if any(
        f["px"] > limit for f in fs)}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("site", nargs="?", default="site", help="the built site")
    parser.add_argument("--width", type=int, default=390, help="window width in px")
    parser.add_argument("--limit", type=int, default=390, help="widest formula allowed, in px")
    parser.add_argument("-v", "--verbose", action="store_true", help="list each wide formula")
    args = parser.parse_args(argv)
    found = formula_widths(Path(args.site), args.width)
    total = sum(len(fs) for fs in found.values())
    wide = {p: [f for f in fs if f["px"] > args.limit] for p, fs in found.items()}
    for page, fs in sorted(wide.items()):
        if fs:
            print(f"{len(fs):4d}  {page}")
            for f in fs if args.verbose else []:
                print(f"        {f['px']:5d} px  {f['text']!r}")
    count = sum(len(fs) for fs in wide.values())
    print(f"{count} of {total} display formulas wider than {args.limit} px at {args.width} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
