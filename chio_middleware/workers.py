"""Can more than one worker process run this app? (issue: never per-process silently)

A per-process replay store under several workers accepts a DPoP proof or execution nonce
once per worker, and multiplies budgets and rate limits by the worker count. The
middleware therefore asks, at construction, how many workers may run:

1. the server's own configuration, when the app is built inside a server that exposes
   it on the call stack (gunicorn's arbiter and workers, uvicorn's ``Config``, including
   ``uvicorn --workers N`` and ``python -m uvicorn``, hypercorn's ``Config``, each
   after its configuration file and environment were applied);
2. otherwise what a server announces before it imports the app: ``WEB_CONCURRENCY``
   (the default worker count of gunicorn and uvicorn), ``GUNICORN_CMD_ARGS``,
   ``UVICORN_WORKERS``, ``GRANIAN_WORKERS``; the server's command line (``-w N``,
   ``--workers N``, ``--workers=N`` of gunicorn, uvicorn, hypercorn and granian, run as a
   script or with ``python -m``: spawned workers see the parent's command line); and a
   gunicorn configuration file (``-c``/``--config``, or ``./gunicorn.conf.py``, gunicorn's
   default) or a hypercorn TOML one, when it sets ``workers`` to a literal number.

When a server's configuration file sets the worker count in a way that cannot be read
without running it (``workers = multiprocessing.cpu_count() * 2 + 1``),
:func:`detected_workers` returns ``None``: unknown, which the runtime treats as several.
Under WSGI the middleware also reads ``wsgi.multiprocess`` on each request.
"""

from __future__ import annotations

import ast
import contextlib
import os
import shlex
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["detected_workers", "restarts_workers_that_fail_to_import", "server_of"]

_SERVERS = ("gunicorn", "uvicorn", "hypercorn", "granian")
_ENV_COUNTS = ("WEB_CONCURRENCY", "UVICORN_WORKERS", "GRANIAN_WORKERS")
_MAX_FRAMES = 400


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


def _config_file(args: Sequence[str]) -> str | None:
    for index, arg in enumerate(args):
        if arg in ("-c", "--config") and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--config="):
            return arg.partition("=")[2]
    return None


def server_of(argv: Sequence[str]) -> str | None:
    """The server whose command line ``argv`` is (``gunicorn``, ``uvicorn``...), if any.

    ``/venv/bin/uvicorn ...`` and ``python -m uvicorn ...`` (whose ``argv[0]`` is
    ``.../uvicorn/__main__.py``) alike.
    """
    for part in argv[:3]:
        if not part:
            continue
        path = Path(part)
        name = path.parent.name if path.name == "__main__.py" else path.name
        for server in _SERVERS:
            if name.startswith(server):
                return server
    return None


def _literal_workers(tree: ast.Module) -> tuple[bool, int | None]:
    """(``workers`` is assigned, its value if every assignment is a literal number)."""
    assigned, value, readable = False, 0, True
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets, expression = node.targets, node.value
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets, expression = [node.target], None  # annotated or augmented: not read
        else:
            continue
        if not any(isinstance(t, ast.Name) and t.id == "workers" for t in targets):
            continue
        assigned = True
        if (
            isinstance(expression, ast.Constant)
            and isinstance(expression.value, int)
            and not isinstance(expression.value, bool)
        ):
            value = max(value, expression.value)
        else:
            readable = False
    if not assigned:
        return False, None
    return True, value if readable else None


def _from_config_file(server: str, args: Sequence[str], cwd: Path) -> tuple[bool, int | None]:
    """(the file sets ``workers``, the count if readable) for a gunicorn/hypercorn file."""
    named = _config_file(args)
    if server == "gunicorn":
        path = named.removeprefix("file:") if named else "gunicorn.conf.py"
        if path.startswith("python:"):  # a module: not read here
            return True, None
        file = cwd / path
        if not file.is_file():
            return named is not None, None  # a named file we cannot read: unknown
        try:
            return _literal_workers(ast.parse(file.read_text(encoding="utf-8")))
        except (OSError, SyntaxError, ValueError):
            return True, None
    if server == "hypercorn" and named:
        if not named.endswith(".toml") or named.startswith(("python:", "file:")):
            return True, None
        try:
            data = tomllib.loads((cwd / named).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            return True, None
        workers = data.get("workers")
        if workers is None:
            return False, None
        return True, workers if isinstance(workers, int) else None
    return False, None


def _count_of(candidate: Any) -> int | None:
    """The worker count a server object holds (gunicorn ``cfg``, uvicorn/hypercorn config)."""
    for holder in (candidate, getattr(candidate, "cfg", None), getattr(candidate, "config", None)):
        count: Any = None
        if holder is not None:
            with contextlib.suppress(Exception):  # a property that cannot be read here
                count = getattr(holder, "workers", None)
        if isinstance(count, int) and not isinstance(count, bool):
            return count
    return None


def _from_stack(frame: FrameType | None) -> int | None:
    """The largest worker count the server frames on the call stack hold, if any."""
    counts: list[int] = []
    for _ in range(_MAX_FRAMES):
        if frame is None:
            break
        module = frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.partition(".")[0] in _SERVERS:
            local = frame.f_locals
            for name in ("self", "config", "cfg", "arbiter", "worker"):
                count = _count_of(local.get(name))
                if count is not None:
                    counts.append(count)
        frame = frame.f_back
    return max(counts) if counts else None


def detected_workers(
    environ: Mapping[str, str] | None = None,
    argv: Sequence[str] | None = None,
    *,
    cwd: Path | None = None,
    frame: FrameType | None = None,
) -> int | None:
    """How many worker processes may run this app: the server's own count when it is on
    the call stack, else the largest count the environment, the command line or a
    configuration file announces (1 if none), or ``None`` when a configuration file sets
    it in a way that cannot be read (unknown: treat as several)."""
    live = _from_stack(frame if frame is not None else sys._getframe(1))
    if live is not None:
        return live
    env = os.environ if environ is None else environ
    args = list(sys.argv if argv is None else argv)
    counts = [1]
    for name in _ENV_COUNTS:
        value = env.get(name, "").strip()
        if value.isdigit():
            counts.append(int(value))
    from_cmd_args = _workers_from_args(shlex.split(env.get("GUNICORN_CMD_ARGS", "")))
    if from_cmd_args is not None:
        counts.append(from_cmd_args)
    server = server_of(args)
    if server is not None:
        from_argv = _workers_from_args(args)
        if from_argv is not None:
            counts.append(from_argv)
        elif server == "hypercorn" or (server == "gunicorn" and from_cmd_args is None):
            # gunicorn: the command line and GUNICORN_CMD_ARGS override its config file
            config_args = [*shlex.split(env.get("GUNICORN_CMD_ARGS", "")), *args]
            sets, count = _from_config_file(server, config_args, cwd or Path.cwd())
            if sets and count is None:
                return None
            if count is not None:
                counts.append(count)
    return max(counts)


def restarts_workers_that_fail_to_import(frame: FrameType | None = None) -> bool:
    """True when the app is being built in a worker of a supervisor that restarts a worker
    dying at import, forever (uvicorn's ``--workers N`` supervisor: only a worker that
    fails its lifespan start-up, exit status 3, stops it)."""
    frame = frame if frame is not None else sys._getframe(1)
    for _ in range(_MAX_FRAMES):
        if frame is None:
            return False
        if str(frame.f_globals.get("__name__", "")).startswith("uvicorn.supervisors.multiprocess"):
            return True
        frame = frame.f_back
    return False
