"""A Redis that dies mid-run: 503 with a receipt, then service resumes by itself.

The restarted Redis keeps nothing (no persistence): proofs signed before the restart are
refused from then on (see test_faults.py), so the calls after it sign fresh ones."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chio_middleware.core.receipts import verify_receipt
from tests.middleware.harness import agent_headers

from .servers import KERNEL, notes_capability, running
from .test_workers import send


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def redis_server(port: int, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A private redis-server; returns once it logs that it accepts connections."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server must be installed (it is on CI)"
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    for line in process.stdout:  # blocks until the server says it is ready (or exits)
        if b"Ready to accept connections" in line:
            break
    else:
        raise AssertionError("redis-server did not start")
    stream = process.stdout
    threading.Thread(target=lambda: stream.read(), daemon=True).start()  # keep the pipe drained
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_redis_outage_fails_closed_and_recovers(tmp_path: Path) -> None:
    port = free_port()
    now = int(time.time())
    cap = notes_capability(now)
    env = {"CHIO_REPLAY_STORE": f"redis://127.0.0.1:{port}/0", "CHIO_STORE_TIMEOUT": "0.2"}

    def call(issued_at: int = now) -> tuple[int, dict[str, str]]:
        return send(
            server.url,
            "GET",
            "/notes",
            agent_headers("GET", "/notes", cap=cap, issued_at=issued_at),
        )

    with (
        redis_server(port, tmp_path) as first,
        running("uvicorn", tmp_path, workers=2, extra_env=env) as server,
    ):
        assert call()[0] == 200
        first.terminate()
        first.wait(timeout=20)
        outage = [call() for _ in range(4)]
        assert [status for status, _ in outage] == [503] * 4
        assert all(info["error"] == "chio_unavailable" and info["receipt"] for _, info in outage)
        with redis_server(port, tmp_path):
            fresh = int(time.time()) + 2  # after the restart was noticed, within the skew
            assert [call(fresh)[0] for _ in range(3)] == [200] * 3  # no app restart needed
    receipts = [
        verify_receipt(line, trusted_keys=[KERNEL.public_key])
        for line in server.receipts.read_bytes().splitlines()
    ]
    unavailable = [r for r in receipts if r.response_status == 503]
    assert {r.id for r in unavailable} == {info["receipt"] for _, info in outage}
    assert all(r.verdict.reason and "unavailable" in r.verdict.reason for r in unavailable)
