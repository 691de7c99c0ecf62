"""The command line refuses a bad value of every option with one line naming it: exit
status 2, the message on stderr, no traceback; and --help shows the defaults."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from npattn.__main__ import build_parser

ROOT = Path(__file__).resolve().parents[1]
PROC = Path("/proc")

# (subcommand, the option named in the refusal, the arguments after the subcommand)
BAD = [
    ("gradcheck", "--seed", ["--seed", "-1"]),
    ("gradcheck", "--seed", ["--seed", "one"]),
    ("decode", "--prompt-tokens", ["--prompt-tokens", "0"]),
    ("decode", "--prompt-tokens", ["--prompt-tokens", "60000", "--new-tokens", "5000"]),
    ("decode", "--new-tokens", ["--new-tokens", "-3"]),
    ("decode", "--d", ["--d", "10000000000000"]),
    ("decode", "--d", ["--d", "0"]),
    ("decode", "--heads", ["--heads", "3"]),
    ("decode", "--heads", ["--heads", "0"]),
    ("decode", "--groups", ["--groups", "3"]),
    ("decode", "--window", ["--window", "0"]),
    ("decode", "--dtype", ["--dtype", "float16"]),
    ("decode", "--seed", ["--seed", "-1"]),
    ("decode", "--progress", ["--progress=yes"]),
    ("demo", "--weights", ["--weights", "tf"]),
    ("demo", "--plot", ["--plot", "{a_file}"]),
    pytest.param(
        "demo", "--plot", ["--plot", "/proc/x"],
        marks=pytest.mark.skipif(not PROC.is_dir(), reason="no /proc to fail to write to"),
    ),
]  # fmt: skip


def refusal(argv, code=None):
    """Run `python -m npattn ARGV` (or `code`, a script that calls main) in a fresh process."""
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "npattn", *argv]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def assert_one_line_refusal(result, sub, option):
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"python -m npattn {sub}: error: argument {option}"), lines[0]


@pytest.mark.parametrize("sub, option, args", BAD)
def test_a_bad_value_is_refused_in_one_line_naming_the_option(sub, option, args, tmp_path):
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a directory")
    args = [a.format(a_file=a_file) for a in args]
    assert_one_line_refusal(refusal([sub, *args]), sub, option)


def test_torch_weights_without_torch_say_how_to_install_it():
    code = (
        "import sys; sys.modules['torch'] = None\n"  # as if torch were not installed
        "from npattn.__main__ import main\n"
        "sys.exit(main(['demo', '--weights', 'torch']))\n"
    )
    result = refusal(None, code)
    assert_one_line_refusal(result, "demo", "--weights")
    assert "pip install -c constraints.txt -e '.[torch]'" in result.stderr


def subparsers():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_option_of_every_subcommand_has_a_bad_value_above():
    covered = {(p.values[0], p.values[1]) if hasattr(p, "values") else p[:2] for p in BAD}
    for name, subparser in subparsers().items():
        for action in subparser._actions:
            if action.option_strings and action.dest != "help":
                assert (name, action.option_strings[0]) in covered, (name, action.dest)


@pytest.mark.parametrize("name", ["demo", "gradcheck", "decode"])
def test_help_shows_the_defaults(name):
    text = subparsers()[name].format_help()
    assert "(default: " in text
    for action in subparsers()[name]._actions:
        if action.option_strings and action.default not in (None, argparse.SUPPRESS):
            assert f"(default: {action.default})" in " ".join(text.split()), action.dest
