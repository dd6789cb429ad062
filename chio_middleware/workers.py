"""Can more than one worker process run this app? (issue: never per-process silently)

A per-process replay store under several workers accepts a DPoP proof or execution nonce
once per worker, and multiplies budgets and rate limits by the worker count. The
middleware therefore asks, at construction, how many workers may run, from what servers
expose before the app is imported:

- ``WEB_CONCURRENCY`` (read by gunicorn and uvicorn as their default worker count);
- ``GUNICORN_CMD_ARGS`` and the server's command line: ``-w N`` / ``--workers N`` /
  ``--workers=N`` of gunicorn, uvicorn and hypercorn (uvicorn's spawned workers inherit
  the parent's command line).

Under WSGI the middleware also reads ``wsgi.multiprocess`` on each request, which catches a
worker count set in a server's configuration file.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence

__all__ = ["detected_workers"]

_SERVERS = ("gunicorn", "uvicorn", "hypercorn")


def _workers_from_args(args: Sequence[str]) -> int | None:
    for index, arg in enumerate(args):
        value: str | None = None
        if arg in ("-w", "--workers") and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith("--workers="):
            value = arg.partition("=")[2]
        elif arg.startswith("-w") and arg[2:].isdigit():
            value = arg[2:]
        if value is not None and value.strip().isdigit():
            return int(value)
    return None


def detected_workers(
    environ: dict[str, str] | None = None, argv: Sequence[str] | None = None
) -> int:
    """The largest worker count the environment or command line announces (1 if none)."""
    env = os.environ if environ is None else environ
    args = list(sys.argv if argv is None else argv)
    counts = [1]
    concurrency = env.get("WEB_CONCURRENCY", "").strip()
    if concurrency.isdigit():
        counts.append(int(concurrency))
    from_cmd_args = _workers_from_args(shlex.split(env.get("GUNICORN_CMD_ARGS", "")))
    if from_cmd_args is not None:
        counts.append(from_cmd_args)
    launched_by_server = any(
        os.path.basename(part).startswith(_SERVERS) for part in args[:3] if part
    )
    if launched_by_server:
        from_argv = _workers_from_args(args)
        if from_argv is not None:
            counts.append(from_argv)
    return max(counts)
