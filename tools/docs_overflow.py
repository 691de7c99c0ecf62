"""Which display equations, code blocks and tables of the built site overflow the column.

Opens every page of site/ in headless Chromium at a given window width (1280 px by default)
and reports each `.math-display`, `pre > code` and table that is wider than its box or than
the content column. Used by tests/test_docs.py; run by hand after `make docs`:

    python tools/docs_overflow.py [SITE_DIR] [--width 1280]

Exit status 1 when something overflows. Needs chromium on PATH.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# run in the page after load: list what sticks out of the content column
MEASURE = """
window.addEventListener("load", () => setTimeout(() => {
  const right = document.querySelector(".md-content__inner").getBoundingClientRect().right;
  const sel = ".md-typeset .math-display, .md-typeset pre > code, .md-typeset table:not([class])";
  const bad = [];
  for (const el of document.querySelectorAll(sel)) {
    const box = el.getBoundingClientRect();
    const over = Math.max(el.scrollWidth - el.clientWidth, box.right - right);
    const text = el.textContent.slice(0, 70);
    if (over > 1) bad.push({tag: el.tagName, px: Math.round(over), text});
  }
  const pre = document.createElement("pre");
  pre.id = "overflow-report";
  pre.textContent = JSON.stringify(bad);
  document.body.appendChild(pre);
}, 200));
"""


def browser() -> str | None:
    """The first Chromium-like browser on PATH, or None."""
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def overflowing(site: Path, width: int = 1280, pages=None) -> dict[str, list[dict]]:
    """{page: [{tag, px, text}, ...]} for each page with something too wide.

    pages: paths relative to the site ("backward/sdpa.html"); default every page.
    """
    exe = browser()
    if exe is None:
        raise RuntimeError("no chromium on PATH")
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "site"
        shutil.copytree(site, copy)
        for page in sorted(copy.rglob("*.html")):
            name = str(page.relative_to(copy))
            if page.name == "404.html" or (pages is not None and name not in pages):
                continue
            script = f"<script>{MEASURE}</script></body>"
            page.write_text(page.read_text().replace("</body>", script))
            out = subprocess.run(
                [exe, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},1600",
                 "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
                capture_output=True, text=True, timeout=120,
            ).stdout  # fmt: skip
            m = re.search(r'<pre id="overflow-report">(.*?)</pre>', out, re.S)
            no_report = [{"tag": "page", "px": -1, "text": "the page did not report"}]
            bad = json.loads(html.unescape(m.group(1))) if m else no_report
            if bad:
                found[name] = bad
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", nargs="?", default="site", help="the built site (default: site)")
    parser.add_argument("--width", type=int, default=1280, help="window width in px")
    args = parser.parse_args(argv)
    found = overflowing(Path(args.site), args.width)
    for page, bad in found.items():
        print(page)
        for b in bad:
            print(f"  {b['tag']:<5} {b['px']:>5} px  {b['text'][:60]!r}")
    print(f"{len(found)} page(s) with something wider than the column at {args.width} px")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
