"""`python -m npattn exercises list | start | hint | check | solution`.

A workspace is a directory (exercises/ in the current directory unless --dir or DIR says
otherwise) holding the files `start` writes, NAME.py, and two small records: the last hint
level shown per exercise (.hints.json) and the last verdict per exercise (.status.json).
`check` keeps a record only when the file lives in a workspace; a record that is not what it
should be (edited by hand, say) is read as empty. While a file is loaded and checked, its
folder is on sys.path, so helper modules beside it import.
Every error is one line naming the problem; exit status 0 means success (for `check`: correct).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import runpy
import sys
from pathlib import Path

DEFAULT_DIR = "exercises"


class ExerciseError(Exception):
    """A user error, printed as one line."""


def _exercise(name: str):
    from . import get

    try:
        return get(name)
    except ValueError as e:
        raise ExerciseError(f"{e} (`python -m npattn exercises list`)") from None


def _read(path: Path, kind: type) -> dict:
    """The record at path, {} when it is missing or unreadable; entries that are not
    name -> kind (a record edited by hand, say) are left out."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        k: v
        for k, v in data.items()
        if isinstance(k, str) and isinstance(v, kind) and not isinstance(v, bool)
    }


def _is_workspace(ws: Path) -> bool:
    """A folder `start` made, or one holding a record: the only places records are written."""
    if (ws / ".status.json").is_file() or (ws / ".hints.json").is_file():
        return True
    return ws.is_dir() and ws.resolve() == Path(DEFAULT_DIR).resolve()


def _write(path: Path, data: dict) -> None:
    try:
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # a record we cannot write costs the student nothing but the status column


def cmd_list(args) -> int:
    from . import PARTS, all_exercises

    ws = Path(args.dir)
    record = _read(ws / ".status.json", str) if ws.is_dir() else None
    exercises = all_exercises()
    states = {}
    if record is not None:  # the last verdict, or whether the file was started
        for ex in exercises:
            started = "started" if (ws / f"{ex.name}.py").exists() else "-"
            states[ex.name] = record.get(ex.name, started)
    width = max(map(len, states.values()), default=0)
    part = None
    for i, ex in enumerate(exercises, 1):
        if ex.part != part:
            part = ex.part
            print(f"{'' if i == 1 else chr(10)}{PARTS[part]}")
        state = f"{states[ex.name]:{width}} " if states else ""
        print(f"  {i:2}. {ex.name:26} {state}{ex.title}")
    if record is None:
        print(f"\n(no workspace at {ws}/: `python -m npattn exercises start NAME` makes one)")
    return 0


def cmd_start(args) -> int:
    ex = _exercise(args.name)
    ws = Path(args.dir)
    if ws.exists() and not ws.is_dir():
        raise ExerciseError(f"{ws} is not a directory")
    path = ws / f"{ex.name}.py"
    if path.exists():
        raise ExerciseError(f"{path} exists already; not overwriting it")
    try:
        ws.mkdir(parents=True, exist_ok=True)
        path.write_text(ex.stub_source)
    except OSError as e:
        raise ExerciseError(f"cannot write {path}: {e.strerror or e}") from None
    record = ws / ".status.json"  # marks the folder as a workspace
    _write(record, _read(record, str))
    print(f"wrote {path}: {ex.title} (read docs/{ex.docs})")
    print(f"check it with: python -m npattn exercises check {ex.name} {path}")
    return 0


def cmd_hint(args) -> int:
    ex = _exercise(args.name)
    n = len(ex.hints)
    saved = True
    if args.all:
        levels = range(1, n + 1)
    elif args.level is not None:
        if not 1 <= args.level <= n:
            raise ExerciseError(f"{ex.name} has hints 1 to {n}; got --level {args.level}")
        levels = [args.level]
    else:
        ws = Path(args.dir or args.dir_option or DEFAULT_DIR)
        record = ws / ".hints.json"
        shown = _read(record, int)
        level = max(1, min(shown.get(ex.name, 0) + 1, n))
        saved = ws.is_dir()
        if saved:
            _write(record, {**shown, ex.name: level})
        levels = [level]
    for level in levels:
        print(f"Hint {level}/{n}: {ex.hints[level - 1]}")
    if not saved:
        print(
            f"(no workspace at {ws}/, so which hint you saw is not saved and the next `hint` "
            f"shows hint 1 again: `python -m npattn exercises start {ex.name} {ws}` makes one)"
        )
    if not args.all and levels[-1] == n:
        print(f"(that was the last hint; `python -m npattn exercises solution {ex.name}`)")
    return 0


@contextlib.contextmanager
def _beside(path: Path):
    """sys.path with the student's folder first, so helper modules beside the file import."""
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


def _load(name: str, file: str):
    path = Path(file)
    if not path.is_file():
        raise ExerciseError(f"no such file: {file}")
    try:
        namespace = runpy.run_path(str(path), run_name="__exercise__")
    except SyntaxError as e:
        raise ExerciseError(f"{file}, line {e.lineno}: SyntaxError: {e.msg}") from None
    except SystemExit:
        raise ExerciseError(f"{file} exited when loaded") from None
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        try:
            msg = str(e)
        except Exception:
            msg = "(its message could not be shown)"
        raise ExerciseError(f"{file} raised {type(e).__name__} when loaded: {msg}") from None
    fn = namespace.get(name)
    if not callable(fn):
        raise ExerciseError(f"{file} defines no function named {name}")
    return fn


def cmd_check(args) -> int:
    from . import check

    ex = _exercise(args.name)
    with _beside(Path(args.file)):
        fn = _load(ex.name, args.file)
        try:
            result = check(ex.name, fn, seed=args.seed)
        except ImportError as e:
            raise ExerciseError(str(e)) from None
    print(result)
    ws = Path(args.file).resolve().parent
    if not _is_workspace(ws):
        return 0 if result.passed else 1  # a file elsewhere: no record to keep
    record = ws / ".status.json"
    state = (
        "passed"
        if result.passed
        else f"not yet ({result.mistake})"
        if result.mistake
        else ("not yet")
    )
    _write(record, {**_read(record, str), ex.name: state})
    return 0 if result.passed else 1


def cmd_solution(args) -> int:
    ex = _exercise(args.name)
    print(ex.solution_source, end="")
    return 0


def _one_line_error(message: str):
    print(f"error: {message} (python -m npattn exercises --help)", file=sys.stderr)
    sys.exit(2)


class _Parser(argparse.ArgumentParser):
    """A parser whose usage errors are one line, like every other error here."""

    def error(self, message: str):
        _one_line_error(f"{self.prog}: {message}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `exercises` subcommand's own subcommands."""
    parser.error = lambda message: _one_line_error(message)  # one line, not usage + error
    sub = parser.add_subparsers(
        parser_class=_Parser,
        dest="action",
        required=True,
        metavar="ACTION",
        help="list, start, hint, check, solution",
    )
    ls = sub.add_parser("list", help="every exercise, with its status in a workspace")
    ls.add_argument("--dir", default=DEFAULT_DIR, help="the workspace (default: exercises/)")
    st = sub.add_parser("start", help="write the stub to DIR/NAME.py (never overwrites)")
    st.add_argument("name", metavar="NAME", help="the exercise (see `list`)")
    st.add_argument(
        "dir", metavar="DIR", nargs="?", default=DEFAULT_DIR, help="default: exercises/"
    )
    hi = sub.add_parser("hint", help="the next hint (or --all, or --level N)")
    hi.add_argument("name", metavar="NAME", help="the exercise")
    hi.add_argument("--all", action="store_true", help="every hint at once")
    hi.add_argument("--level", type=int, help="hint number N (1 = gentlest)")
    hi.add_argument(
        "dir", metavar="DIR", nargs="?", default=None, help="the workspace (default: exercises/)"
    )
    hi.add_argument("--dir", dest="dir_option", help="the same as DIR")
    ch = sub.add_parser("check", help="check FILE's function NAME (exit 0 iff correct)")
    ch.add_argument("name", metavar="NAME", help="the exercise")
    ch.add_argument("file", metavar="FILE", help="a Python file defining the function NAME")
    ch.add_argument("--seed", type=int, default=0, help="seed of the input search (default 0)")
    so = sub.add_parser("solution", help="print the reference solution")
    so.add_argument("name", metavar="NAME", help="the exercise")


def main(args) -> int:
    commands = {
        "list": cmd_list,
        "start": cmd_start,
        "hint": cmd_hint,
        "check": cmd_check,
        "solution": cmd_solution,
    }
    try:
        return commands[args.action](args)
    except ExerciseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
