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
    under gunicorn (``kind="gunicorn"``) with ``workers`` processes; stop it cleanly.
    ``app`` names another application (``module:attribute``) to serve instead."""
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
    bin_dir = Path(sys.executable).parent
    if kind == "uvicorn":
        command = [
            str(bin_dir / "uvicorn"),
            app or "examples.starlette_app.app:app",
            "--fd",
            str(fd),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ]
    elif kind == "gunicorn":
        command = [
            str(bin_dir / "gunicorn"),
            app or "examples.flask_app.app:app",
            "--bind",
            f"fd://{fd}",
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--graceful-timeout",
            "5",
        ]
    else:
        raise ValueError(kind)
    log = state / f"{kind}.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            command, env=env, cwd=state, pass_fds=(fd,), stdout=log_file, stderr=subprocess.STDOUT
        )
    listener.close()
    try:
        yield Server(f"http://127.0.0.1:{port}", process, receipts, log)
    finally:
        process.send_signal(signal.SIGINT if kind == "uvicorn" else signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
