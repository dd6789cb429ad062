"""Running the CLI: in process through ``main(argv)``, or as the installed console script."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from chio_middleware.cli import Env, main
from chio_middleware.core.clock import FixedClock
from tests.sinks.logmaker import AGENT, BASE_TIME, KERNEL

#: The console script installed next to the interpreter running the tests (.venv/bin).
SCRIPT = Path(sys.executable).with_name("chio-middleware")
NOW = BASE_TIME + 300  # five minutes after the first receipt of a test log


@dataclass
class Result:
    """Exit status and output of one command."""

    status: int
    out: str
    err: str


class Tty(io.StringIO):
    """A stdout that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def run(
    *argv: str,
    stdin: str = "",
    now: float = NOW,
    wait: Callable[[], None] | None = None,
    tty: bool = False,
    environ: dict[str, str] | None = None,
) -> Result:
    """``main(argv)`` with captured output, a fixed clock and no real terminal."""
    out = Tty() if tty else io.StringIO()
    err = io.StringIO()
    env = Env(
        stdout=out,
        stderr=err,
        stdin=io.StringIO(stdin),
        clock=FixedClock(now),
        wait=wait,
        environ=environ if environ is not None else {},
    )
    status = main(list(argv), env=env)
    return Result(status, out.getvalue(), err.getvalue())


def run_script(*argv: str, stdin: str = "", cwd: Path | None = None) -> Result:
    """The installed ``chio-middleware`` script in a real subprocess."""
    return run_process([str(SCRIPT), *argv], stdin=stdin, cwd=cwd)


def run_process(argv: Sequence[str], *, stdin: str = "", cwd: Path | None = None) -> Result:
    """Any command in a subprocess, output captured (a generous timeout, never a race)."""
    done = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """Key files of the test kernel and agent, as ``keygen --out`` writes them."""
    files = {}
    for name, key in (("kernel", KERNEL), ("agent", AGENT)):
        path = tmp_path / f"{name}.key"
        path.write_text(key.seed_hex() + "\n")
        path.chmod(0o600)
        files[name] = path
    return files
