"""Start the examples under real servers on 127.0.0.1, without polling for readiness.

The listening socket is bound here and handed to the server (uvicorn ``--fd``, gunicorn
``--bind fd://``): connections made before the server is up wait in the backlog, so a test
can talk to it at once, and no port can be taken in between.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from chio_middleware.core.capability import sign_capability
from chio_middleware.core.crypto import SigningKey
from chio_middleware.core.models import CapabilityToken

ROOT = Path(__file__).resolve().parents[2]
ISSUER = SigningKey.from_seed_hex("0b" * 32)
AGENT = SigningKey.from_seed_hex("21" * 32)
KERNEL = SigningKey.from_seed_hex("22" * 32)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    receipts: Path
    log: Path


def notes_capability(
    now: int, *, grants: list[dict[str, object]] | None = None, cap_id: str = "cap-e2e"
) -> CapabilityToken:
    tools = ["list_notes", "read_note", "write_note", "delete_note"]
    return sign_capability(
        ISSUER,
        {
            "id": cap_id,
            "issuer": ISSUER.public_key.hex,
            "subject": AGENT.public_key.hex,
            "scope": {
                "grants": grants
                or [
                    {"server_id": "srv-notes", "tool_name": t, "operations": ["invoke"]}
                    for t in tools
                ]
            },
            "issued_at": now - 5,
            "expires_at": now + 3600,
        },
    )


#: The servers an app can run under: ASGI apps under all but ``gunicorn``, WSGI apps
#: under ``gunicorn`` and ``hypercorn``.
KINDS = ("uvicorn", "python-m-uvicorn", "hypercorn", "gunicorn", "gunicorn-uvicorn")
#: The example each kind serves unless told otherwise.
DEFAULT_APPS = {
    "uvicorn": "examples.starlette_app.app:app",
    "python-m-uvicorn": "examples.starlette_app.app:app",
    "hypercorn": "examples.starlette_app.app:app",
    "gunicorn": "examples.flask_app.app:app",
    "gunicorn-uvicorn": "examples.starlette_app.app:app",
}


def server_command(
    kind: str, fd: int, *, workers: int | None = 1, app: str | None = None
) -> list[str]:
    """The command line that serves ``app`` under ``kind`` on the listening socket ``fd``
    (``workers=None``: no ``--workers`` option, the server's configuration decides).

    uvicorn keeps its default lifespan mode ("auto"), as a user's command line does.
    """
    bin_dir = Path(sys.executable).parent
    target = app or DEFAULT_APPS[kind]
    count = [] if workers is None else ["--workers", str(workers)]
    if kind in ("uvicorn", "python-m-uvicorn"):
        launcher = [str(bin_dir / "uvicorn")] if kind == "uvicorn" else [sys.executable, "-m", "uvicorn"]
        return [*launcher, target, "--fd", str(fd), *count, "--log-level", "warning"]
    if kind == "hypercorn":
        return [str(bin_dir / "hypercorn"), target, "--bind", f"fd://{fd}", *count]
    if kind in ("gunicorn", "gunicorn-uvicorn"):
        command = [
            str(bin_dir / "gunicorn"),
            target,
            "--bind",
            f"fd://{fd}",
            *count,
            "--log-level",
            "warning",
            "--graceful-timeout",
            "5",
        ]
        if kind == "gunicorn-uvicorn":
            command += ["--worker-class", "uvicorn.workers.UvicornWorker"]
        return command
    raise ValueError(kind)


@contextmanager
def running(
    kind: str,
    state: Path,
    *,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    app: str | None = None,
) -> Iterator[Server]:
    """Run the Starlette example under uvicorn (``kind="uvicorn"``) or the Flask example
    under gunicorn (``kind="gunicorn"``), or ``app`` under any of :data:`KINDS`, with
    ``workers`` processes; stop it cleanly."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    receipts = state / "receipts.jsonl"
    env = {
        **os.environ,
        "CHIO_SIGNING_KEY": KERNEL.seed_hex(),
        "CHIO_TRUSTED_ISSUERS": json.dumps([ISSUER.public_key.hex]),
        "CHIO_RECEIPT_SINK": f"jsonl:{receipts}",
        "PYTHONPATH": str(ROOT),
        **(extra_env or {}),
    }
    command = server_command(kind, fd, workers=workers, app=app)
    log = state / f"{kind}.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            command, env=env, cwd=state, pass_fds=(fd,), stdout=log_file, stderr=subprocess.STDOUT
        )
    listener.close()
    try:
        yield Server(f"http://127.0.0.1:{port}", process, receipts, log)
    finally:
        process.send_signal(signal.SIGINT if kind.startswith("uvicorn") else signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Refusal:
    """How a server that should not start ended: its exit status, its output, and what the
    request that was waiting for it from the first moment got back (``b""``: nothing)."""

    returncode: int
    output: str
    answer: bytes


def start_refused(
    kind: str,
    state: Path,
    *,
    app: str | None = None,
    workers: int | None = 1,
    extra_env: dict[str, str] | None = None,
    argv: list[str] | None = None,
    timeout: float = 90,
) -> Refusal:
    """Start ``app`` under ``kind`` with a bad setting, a request already queued on its socket.

    The socket is bound and a client connected and sends its request before the server
    starts, so anything the server accepts before it stops is seen in ``answer``. The
    server must stop by itself (``timeout`` only bounds a broken test).
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    client = socket.create_connection(listener.getsockname(), timeout=timeout)
    client.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    receipts = state / "receipts.jsonl"
    env = {
        **os.environ,
        "CHIO_SIGNING_KEY": KERNEL.seed_hex(),
        "CHIO_TRUSTED_ISSUERS": json.dumps([ISSUER.public_key.hex]),
        "CHIO_RECEIPT_SINK": f"jsonl:{receipts}",
        "PYTHONPATH": str(ROOT),
        **(extra_env or {}),
    }
    command = [*server_command(kind, listener.fileno(), workers=workers, app=app), *(argv or [])]
    log = state / f"{kind}.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=state,
            pass_fds=(listener.fileno(),),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    listener.close()
    try:
        returncode = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        returncode = -999  # did not stop by itself
    answer = b""
    try:
        while chunk := client.recv(65536):
            answer += chunk
    except OSError:  # reset: the queued connection was never accepted
        pass
    finally:
        client.close()
    return Refusal(returncode, log.read_text(errors="replace"), answer)
