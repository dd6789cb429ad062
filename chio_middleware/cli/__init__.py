"""The ``chio-middleware`` command line: keys, development tokens, DPoP headers, receipts.

``chio-middleware --version`` prints the package version. Commands, each with ``--help``:
``keygen`` (``--public KEYFILE``: the public key of a seed), ``issue``, ``proof``,
``inspect``, ``verify``, ``tail``, ``export``, ``federation``. Exit status: 0 success, 1 a
check failed (a problem in a receipt log, a signature that does not verify, a refused
handshake), 2 bad usage or unusable input (missing file, bad hex, a value that is not a
Chio object). Written on argparse alone; ``python -m chio_middleware.cli`` works as well as
the console script.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout

from . import export, federation, inspection, issue, keys, proof, tail, verify
from ._common import EXIT_USAGE, CliError, Env

__all__ = ["Env", "build_parser", "main", "package_version"]


def package_version() -> str:
    """The installed distribution's version (the package's own when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chio-middleware")
    except PackageNotFoundError:
        from .. import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="chio-middleware",
        description="Chio capability, DPoP and receipt tools for chio_middleware.",
        epilog="Run 'chio-middleware COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (keys, issue, proof, inspection, verify, tail, export, federation):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None, *, env: Env | None = None) -> int:
    """Run one command; return its exit status (argparse's usage errors give 2)."""
    env = env or Env()
    parser = build_parser()
    try:
        with redirect_stdout(env.stdout), redirect_stderr(env.stderr):
            args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        status: int = args.handler(args, env)
    except CliError as exc:
        env.err(f"chio-middleware {args.command}: error: {exc.message}")
        return exc.status
    except BrokenPipeError:
        # The reader went away (``tail ... | head``): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status
