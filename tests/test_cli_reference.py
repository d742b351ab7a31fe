"""docs/cli.md lists every option of every command, as the parser has them, and no other."""

import argparse
import re
from pathlib import Path

import pytest

from mmcam.cli import build_parser

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _documented(command: str) -> set[str]:
    """The option strings in the first column of the table under ``### mmcam COMMAND``."""
    text = REFERENCE.read_text()
    heading = f"\n### mmcam {command}\n"
    assert heading in text, f"docs/cli.md has no section '### mmcam {command}'"
    section = re.split(r"\n##+ ", text.split(heading, 1)[1], maxsplit=1)[0]
    cells = re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)
    return {word.rstrip(",") for cell in cells for word in cell.split() if word.startswith("-")}


@pytest.mark.parametrize("command", sorted(_commands()))
def test_the_cli_reference_lists_every_option_of_the_command(command):
    parser = _commands()[command]
    options = {o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help")}
    documented = _documented(command)
    assert not options - documented, f"docs/cli.md, mmcam {command}: add {sorted(options - documented)}"
    assert not documented - options, (
        f"docs/cli.md, mmcam {command}: no such option {sorted(documented - options)}"
    )
