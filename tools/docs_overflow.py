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
  report(bad);
}, 200));
"""


def browser() -> str | None:
    """The first Chromium-like browser on PATH, or None."""
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


# Headless Chromium lays a page out at least 500 px wide, whatever --window-size says: a
# narrower width (a phone's 390 px) is measured in an iframe of that width, inside a wrapper
# page that copies the iframe's report out (file:// pages may read each other only with
# --allow-file-access-from-files).
MIN_WINDOW = 500
WRAPPER = """<!doctype html><html><body style="margin:0">
<iframe id="page" src="{src}" width="{width}" height="{height}" style="border:0"></iframe>
<script>
const poll = setInterval(() => {{
  let doc = null;
  try {{ doc = document.getElementById("page").contentDocument; }} catch (e) {{ return; }}
  const found = doc && doc.getElementById("page-report");
  if (!found) return;
  clearInterval(poll);
  const pre = document.createElement("pre");
  pre.id = "page-report";
  pre.textContent = found.textContent;
  document.body.appendChild(pre);
}}, 50);
</script></body></html>"""


def chromium_args(exe: str, width: int, height: int) -> list[str]:
    size = f"--window-size={max(width, MIN_WINDOW)},{height}"
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--allow-file-access-from-files", size]  # fmt: skip


def wrap_narrow(page: Path, width: int, height: int) -> Path:
    """The page itself, or below MIN_WINDOW a wrapper page showing it in a `width` iframe."""
    if width >= MIN_WINDOW:
        return page
    wrapper = page.with_name(f"_narrow_{page.name}")
    wrapper.write_text(WRAPPER.format(src=page.name, width=width, height=height))
    return wrapper


def run_in_pages(site: Path, width: int, script: str, pages=None, height: int = 1600) -> dict:
    """{page: JSON value} that `script` reports in each page of the built site.

    The script runs in the page after load and stores its answer with `report(value)`.
    pages: paths relative to the site ("backward/sdpa.html"); default every page but 404.html.
    A width under 500 px (a phone) is laid out in an iframe of that width (MIN_WINDOW).
    """
    exe = browser()
    if exe is None:
        raise RuntimeError("no chromium on PATH")
    found = {}
    wrapper = (
        "function report(v) { const pre = document.createElement('pre');"
        " pre.id = 'page-report'; pre.textContent = JSON.stringify(v);"
        " document.body.appendChild(pre); }\n" + script
    )
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "site"
        shutil.copytree(site, copy)
        for page in sorted(copy.rglob("*.html")):
            name = str(page.relative_to(copy))
            if page.name == "404.html" or (pages is not None and name not in pages):
                continue
            tag = f"<script>{wrapper}</script></body>"
            page.write_text(page.read_text().replace("</body>", tag))
            target = wrap_narrow(page, width, height)
            out = subprocess.run(
                [*chromium_args(exe, width, height), "--virtual-time-budget=3000",
                 "--dump-dom", target.as_uri()],
                capture_output=True, text=True, timeout=120,
            ).stdout  # fmt: skip
            m = re.search(r'<pre id="page-report">(.*?)</pre>', out, re.S)
            found[name] = json.loads(html.unescape(m.group(1))) if m else None
    return found


def screenshot(site: Path, page: str, width: int, height: int, out: Path) -> None:
    """A PNG of one page of the built site at `width` px (a phone's 390 px works too)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "site"
        shutil.copytree(site, copy)
        target = wrap_narrow(copy / page, width, height)
        subprocess.run(
            [*chromium_args(browser(), width, height), "--virtual-time-budget=3000",
             f"--screenshot={out}", target.as_uri()],
            capture_output=True, timeout=120, check=True,
        )  # fmt: skip


def overflowing(site: Path, width: int = 1280, pages=None) -> dict[str, list[dict]]:
    """{page: [{tag, px, text}, ...]} for each page with something too wide.

    pages: paths relative to the site ("backward/sdpa.html"); default every page.
    """
    no_report = [{"tag": "page", "px": -1, "text": "the page did not report"}]
    found = run_in_pages(site, width, MEASURE, pages)
    return {name: bad if bad is not None else no_report for name, bad in found.items() if bad != []}


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
