"""The command line: entry point, version, and that every command teaches through --help."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from tig_batch import __version__
from tig_batch.cli import main


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"tig-batch, version {__version__}"


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found.extend(_commands(command, (*prefix, name)))
    return found


@pytest.mark.parametrize("path", [(), *_commands(main)], ids=lambda p: " ".join(p) or "main")
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    assert "Example" in result.output, f"`tig-batch {' '.join(path)} --help` shows no example"
