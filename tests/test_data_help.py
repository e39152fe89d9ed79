"""--help of dataloader.py / compare.py: every flag explained with its default, and
--help or a flag error answered without importing torch, pandas, numpy or matplotlib.

    python -m pytest -q tests/test_data_help.py
"""
import argparse
import subprocess
import sys

import pytest

import compare
import dataloader
from helpers import ROOT


def all_parsers(parser):
    """The parser and its subcommands' parsers."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from all_parsers(sub)


@pytest.mark.parametrize("build_parser", [dataloader.build_parser, compare.build_parser], ids=["dataloader", "compare"])
def test_every_flag_has_a_help_text_and_shows_its_default(build_parser):
    checked = 0
    for parser in all_parsers(build_parser()):
        help_text = parser.format_help()
        assert "examples:" in help_text, parser.prog
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and len(action.help) > 10, f"{parser.prog} {action.dest}: no help text"
            if action.option_strings:
                formatted = parser.formatter_class(parser.prog)._get_help_string(action)
                assert "default" in formatted, f"{parser.prog} {action.option_strings[0]}: no default shown"
                checked += 1
    assert checked >= 4  # the loop saw the flags (compare.py has 4)


HEAVY = ("torch", "pandas", "numpy", "matplotlib")


@pytest.mark.parametrize("argv", [
    ["dataloader.py", "--help"], ["dataloader.py", "download", "--help"], ["dataloader.py", "preprocess", "--help"],
    ["compare.py", "--help"],
    ["dataloader.py", "preprocess", "ML-100K", "--test_ratio", "x"], ["compare.py", "--k", "x", "a.log"],
])
def test_help_and_flag_errors_import_nothing_heavy(argv):
    """Run the script as __main__ and list which heavy modules it imported before exiting."""
    probe = (f"import runpy, sys; sys.argv = {argv!r}\n"
             f"try:\n    runpy.run_path({argv[0]!r}, run_name='__main__')\n"
             f"except SystemExit as exit:\n    code = exit.code\n"
             f"print('IMPORTED', [m for m in {HEAVY!r} if m in sys.modules], code)")
    process = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    expected_code = 0 if "--help" in argv else 2
    assert process.stdout.splitlines()[-1] == f"IMPORTED [] {expected_code}", process.stderr
