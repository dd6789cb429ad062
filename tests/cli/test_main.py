"""The entry points: the console script, ``python -m``, ``--help`` everywhere, usage errors."""

from __future__ import annotations

import sys

import pytest

from tests.cli.conftest import SCRIPT, run, run_process, run_script

COMMANDS = ["keygen", "issue", "proof", "inspect", "verify", "tail"]


def test_the_console_script_is_installed_and_lists_every_command() -> None:
    assert SCRIPT.is_file()
    result = run_script("--help")
    assert result.status == 0
    for command in COMMANDS:
        assert command in result.out


def test_python_dash_m_runs_the_same_main() -> None:
    result = run_process([sys.executable, "-m", "chio_middleware.cli", "--help"])
    assert result.status == 0
    assert "chio-middleware" in result.out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = run(command, "--help")
    assert result.status == 0
    assert f"usage: chio-middleware {command}" in result.out


@pytest.mark.parametrize("command", COMMANDS[1:])
def test_every_command_has_help_in_the_installed_script(command: str) -> None:
    result = run_script(command, "--help")
    assert (result.status, result.err) == (0, "")
    assert result.out.startswith(f"usage: chio-middleware {command}")


def test_no_command_or_an_unknown_one_is_a_usage_error() -> None:
    assert run().status == 2
    result = run_script("frobnicate")
    assert result.status == 2
    assert "invalid choice: 'frobnicate'" in result.err
