"""mkdocs hook: the docs' Python is run at build time, so the docs cannot drift from the code.

On every page:

- each ```python block runs, in order, in one namespace per page; what it prints is shown
  right after it in a ```text block titled "Output", class "output" (the printed numbers are
  computed, never typed in). A block that raises fails the build, naming the page and line.
- a line `<!-- source: npattn.ops.softmax.softmax_backward -->` is replaced by that object's
  current source code, so "the code that implements it" is always the code.

tests/test_docs.py runs the same blocks with the same functions (python_blocks, run_blocks),
so `make test` fails when a docs example stops running.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import os
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
SOURCE_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)<!--\s*source:\s*(?P<name>[\w.]+)\s*-->\s*$")
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class CodeBlock:
    """A fenced code block: its language, code (dedented) and the lines of its fences."""

    lang: str
    info: str
    code: str
    indent: str
    start: int  # 0-based line of the opening fence
    end: int  # 0-based line of the closing fence


def fenced_blocks(markdown: str) -> list[CodeBlock]:
    """Every fenced block of a Markdown page, in order (nested fences are not supported)."""
    lines = markdown.split("\n")
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m["indent"], m["fence"]
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if j == len(lines):
            raise ValueError(f"line {i + 1}: unclosed code fence {fence}")
        body = [ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[i + 1 : j]]
        info = m["info"].strip()
        lang = info.split()[0].lstrip("{.") if info else ""
        blocks.append(CodeBlock(lang, info, "\n".join(body), indent, i, j))
        i = j + 1
    return blocks


def python_blocks(markdown: str) -> list[CodeBlock]:
    """The ```python blocks of a page: the ones that are run."""
    return [b for b in fenced_blocks(markdown) if b.lang == "python"]


def run_blocks(blocks: list[CodeBlock], filename: str) -> list[str]:
    """Run the blocks in order in one fresh namespace; returns what each printed.

    Tracebacks point at the Markdown file and its line numbers. numpy's print options are
    restored afterwards, so a page's np.set_printoptions does not leak into the next page.
    """
    import numpy as np

    namespace = {"__name__": "__docs__"}
    outputs = []
    saved = np.get_printoptions()
    try:
        for b in blocks:
            code = compile("\n" * (b.start + 1) + b.code, filename, "exec")  # real line numbers
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(code, namespace)
            outputs.append(out.getvalue())
    finally:
        np.set_printoptions(**saved)
    return outputs


def resolve(name: str):
    """`package.module.attr.attr` -> the object (the longest importable module prefix)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"cannot import {name!r}")


def source_block(name: str, indent: str = "") -> str:
    """The current source of `name` as a ```python fence titled with its file and line."""
    obj = resolve(name)
    lines, first = inspect.getsourcelines(obj)
    path = Path(inspect.getsourcefile(obj)).resolve()
    try:
        path = path.relative_to(REPO_ROOT)
    except ValueError:
        pass
    title = f"{path.as_posix()}, line {first}"
    body = "".join(lines).rstrip("\n").split("\n")
    fence = [f'```py title="{title}"', *body, "```"]  # `py`: shown, not run again
    return "\n".join(indent + line if line else line for line in fence)


def render(markdown: str, filename: str) -> str:
    """The page with each python block's output after it and source directives expanded."""
    blocks = python_blocks(markdown)
    outputs = run_blocks(blocks, filename)
    after = {b.end: (b.indent, out) for b, out in zip(blocks, outputs) if out.strip()}
    result = []
    for i, line in enumerate(markdown.split("\n")):
        m = SOURCE_DIRECTIVE.match(line)
        result.append(source_block(m["name"], m["indent"]) if m else line)
        if i in after:
            indent, out = after[i]
            text = ['```{.text .output title="Output"}', *out.rstrip("\n").split("\n"), "```"]
            result.extend(["", *(indent + t if t else t for t in text)])
    return "\n".join(result)


def on_config(config):
    """Import npattn from this checkout (mkdocs' script does not put the cwd on sys.path)."""
    root = os.path.dirname(os.path.abspath(config.config_file_path))
    if root not in sys.path:
        sys.path.insert(0, root)
    return config


def on_page_markdown(markdown, page, config, files):
    from mkdocs.exceptions import PluginError

    filename = os.path.join(config.docs_dir, page.file.src_path)
    try:
        return render(markdown, filename)
    except Exception as e:
        tb = "".join(traceback.format_exception(e, limit=-3))
        raise PluginError(f"docs/{page.file.src_path}: a python block failed:\n{tb}") from e
