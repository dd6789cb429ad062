"""What the commands share: the environment, input errors, key files, times and colour."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from ..core.canonical import JsonParseError, parse_json
from ..core.crypto import KeyFormatError, PublicKey, SigningKey
from ..core.encoding import decode_header_object
from ..core.errors import ChioError

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "Env",
    "Palette",
    "format_time",
    "iso_time",
    "parse_public_key",
    "read_bytes",
    "read_header_object",
    "read_signing_key",
]

EXIT_OK = 0
#: A check failed: a problem in a log, a signature that does not verify.
EXIT_FAILED = 1
#: Bad usage or unreadable input (missing file, bad hex, not a Chio object).
EXIT_USAGE = 2


class CliError(Exception):
    """Input the command cannot use; printed as ``chio-middleware: error: ...``, exit 2."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(slots=True)
class Env:
    """The outside world of a command; tests replace parts of it.

    ``wait`` is what ``tail --follow`` calls between two polls of the log (``None``: sleep
    ``--interval`` seconds); a test passes a function that appends receipts, or raises
    ``KeyboardInterrupt`` to stop the follower as Ctrl-C would.
    """

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    clock: Callable[[], float] = time.time
    wait: Callable[[], None] | None = None
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def out(self, text: str = "") -> None:
        """Print a line on stdout (flushed: tail output goes to pipes)."""
        print(text, file=self.stdout, flush=True)

    def err(self, text: str) -> None:
        """Print a line on stderr."""
        print(text, file=self.stderr, flush=True)


def read_bytes(path: str, what: str, env: Env) -> bytes:
    """The bytes of ``path`` (``-``: stdin), or a :class:`CliError` naming the file."""
    if path == "-":
        return env.stdin.read().encode("utf-8")
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CliError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{what} {path}: is a directory") from None
    except OSError as exc:
        raise CliError(f"{what} {path}: {exc.strerror}") from None


def read_signing_key(path: str, what: str, env: Env) -> SigningKey:
    """A key file written by ``keygen``: the hex seed, or its JSON output (``seed``)."""
    text = read_bytes(path, what, env).decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            obj = parse_json(text)
        except JsonParseError as exc:
            raise CliError(f"{what} {path}: {exc}") from None
        text = obj.get("seed", "") if isinstance(obj, dict) else ""
    try:
        return SigningKey.from_seed_hex(text)
    except KeyFormatError as exc:
        raise CliError(f"{what} {path}: not a key file ({exc})") from None


def parse_public_key(value: str, what: str) -> PublicKey:
    """A public key from hex, or a :class:`CliError` naming the option."""
    try:
        return PublicKey.from_hex(value.strip())
    except KeyFormatError as exc:
        raise CliError(f"{what}: {exc}") from None


def read_header_object(text: str, what: str) -> dict[str, Any]:
    """A Chio object as raw JSON or base64url, or a :class:`CliError`."""
    try:
        return decode_header_object(text.strip(), name=what, max_bytes=1 << 20)
    except ChioError as exc:
        raise CliError(exc.message) from None


def _duration(seconds: float) -> str:
    seconds = int(abs(seconds))
    if seconds < 60:
        return f"{seconds}s"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def format_time(timestamp: int, now: float) -> str:
    """``2025-01-02T03:04:05Z (5m 2s ago)``: UTC ISO-8601 and the time relative to ``now``."""
    iso = iso_time(timestamp)
    if iso == "?":
        return f"{timestamp} (out of range)"
    delta = timestamp - now
    if abs(delta) < 1:
        return f"{iso} (now)"
    relative = f"in {_duration(delta)}" if delta > 0 else f"{_duration(delta)} ago"
    return f"{iso} ({relative})"


def iso_time(timestamp: int) -> str:
    """UTC ISO-8601 of a Unix time (``?`` when out of range)."""
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "?"


class Palette:
    """ANSI colours, only when stdout is a terminal and ``NO_COLOR`` is unset."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_env(cls, env: Env, *, allowed: bool = True) -> Palette:
        """Colour when ``allowed``, stdout is a TTY and ``NO_COLOR`` is not set."""
        isatty = getattr(env.stdout, "isatty", None)
        tty = bool(isatty()) if callable(isatty) else False
        return cls(allowed and tty and "NO_COLOR" not in env.environ)

    def paint(self, text: str, code: str) -> str:
        """``text`` in SGR ``code`` (``"32"`` green, ``"1;31"`` bold red...)."""
        return f"\033[{code}m{text}\033[0m" if self.enabled else text


def count_argument(text: str) -> int:
    """argparse type: a non-negative integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value
