"""The command line's parser and option types: every refusal is one line naming the option.

`Parser.error` prints `python -m npattn SUB: error: argument --opt: why (see --help)` on one
line and exits with status 2, as argparse does for its own errors, without the usage block
(which `--help` shows). The types below check a value's range where it is parsed, so a
refusal names the option it came from.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows each option's default, and keeps the description's own line breaks.

    An option whose help already says its default ("default: ...") is left as written.
    """

    def _get_help_string(self, action):
        if "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        message = " ".join(message.split())  # one line, whatever the message held
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def refuse(self, option: str, why: str):
        """Exit with `argument OPTION: WHY`, as a refusal of the parser itself."""
        self.error(f"argument {option}: {why}")


def int_in(low: int, high: int | None = None):
    """An option type: an integer in [low, high] (no upper bound when high is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"from {low} to {high:,}"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


def writable_dir(path: str) -> str:
    """Check that `path` is, or can be made, a directory we can write to; create it.

    Returns the path as given; raises ValueError with the reason otherwise.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{path!r} exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as e:
        raise ValueError(
            f"cannot create or write to the directory {path!r}: {e.strerror}"
        ) from None
    return path
