"""Shared state across worker processes (and hosts): the scale-out guarantees, end to end.

Each example runs with 4 workers. The same DPoP proof, and then the same execution nonce
with fresh proofs, go out concurrently over fresh connections: exactly one is accepted.
A grant with ``max_invocations: N`` allows exactly N calls across all workers. The last
test shows what these tests catch: four single-worker servers on one socket (hosts
without shared state) accept the same proof more than once.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from tests.middleware.harness import agent_headers

from .servers import notes_capability, running

CONCURRENCY = 24


def send(
    url: str, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str]]:
    """One request on a fresh connection (so the kernel spreads them over the workers)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    try:
        connection.request(
            method, path, body=body or None, headers={**headers, "Connection": "close"}
        )
        response = connection.getresponse()
        payload = response.read()
        info = {
            "status": str(response.status),
            "receipt": response.getheader("x-chio-receipt-id") or "",
        }
        if response.getheader("x-chio-execution-nonce"):
            info["nonce"] = response.getheader("x-chio-execution-nonce") or ""
        if payload.startswith(b"{"):
            info["error"] = str(json.loads(payload).get("error", ""))
        return response.status, info
    finally:
        connection.close()


def concurrently(
    calls: list[tuple[str, str, str, dict[str, str], bytes]],
) -> list[tuple[int, dict[str, str]]]:
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        return list(pool.map(lambda call: send(*call), calls))


@pytest.fixture
def redis_url() -> Iterator[str]:
    prefix = f"chio-e2e-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis(host="127.0.0.1", port=6379, db=15)
    client.ping()  # Redis must be up (CI has it): never skip silently
    yield f"redis://127.0.0.1:6379/15#{prefix}"
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


def store_env(store: str, tmp_path: Path, redis_url: str) -> dict[str, str]:
    # A generous store_timeout: these tests count acceptances, and on a loaded 2-core
    # machine 24 concurrent first calls can take longer than the 0.25 s default (503).
    if store == "sqlite":
        return {
            "CHIO_REPLAY_STORE": f"sqlite:///{tmp_path / 'state.db'}",
            "CHIO_STORE_TIMEOUT": "5",
        }
    url, _, prefix = redis_url.partition("#")
    return {"CHIO_REPLAY_STORE": url, "CHIO_STORE_KEY_PREFIX": prefix, "CHIO_STORE_TIMEOUT": "5"}


@pytest.mark.parametrize("store", ["sqlite", "redis"])
@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_replays_and_budgets_are_shared_by_all_workers(
    kind: str, store: str, tmp_path: Path, redis_url: str
) -> None:
    now = int(time.time())
    cap = notes_capability(now)
    with running(
        kind, tmp_path, workers=4, extra_env=store_env(store, tmp_path, redis_url)
    ) as server:
        # 1. one DPoP proof, many times at once: exactly one acceptance
        headers = agent_headers("GET", "/notes", cap=cap, issued_at=now)
        results = concurrently([(server.url, "GET", "/notes", headers, b"")] * CONCURRENCY)
        statuses = [status for status, _ in results]
        assert statuses.count(200) == 1, statuses
        assert all(
            info.get("error") == "chio_replay_detected" for status, info in results if status != 200
        ), results

        # 2. one execution nonce, many times with fresh proofs: exactly one reaches the app
        status, info = send(
            server.url,
            "DELETE",
            "/notes/1",
            agent_headers("DELETE", "/notes/1", cap=cap, issued_at=now),
        )
        assert status == 428
        nonce = info["nonce"]
        calls = [
            (
                server.url,
                "DELETE",
                "/notes/1",
                agent_headers("DELETE", "/notes/1", cap=cap, nonce=nonce, issued_at=now),
                b"",
            )
            for _ in range(CONCURRENCY)
        ]
        results = concurrently(calls)
        reached = [status for status, _ in results if status in (204, 404)]
        assert len(reached) == 1, [s for s, _ in results]
        assert all(
            info.get("error") == "chio_replay_detected"
            for status, info in results
            if status not in (204, 404)
        )

        # 3. max_invocations: 5 allows exactly 5 calls across the workers
        limited = notes_capability(
            now,
            cap_id=f"cap-budget-{kind}-{store}",
            grants=[
                {
                    "server_id": "srv-notes",
                    "tool_name": "list_notes",
                    "operations": ["invoke"],
                    "max_invocations": 5,
                }
            ],
        )
        calls = [
            (
                server.url,
                "GET",
                "/notes",
                agent_headers("GET", "/notes", cap=limited, issued_at=now),
                b"",
            )
            for _ in range(20)
        ]
        statuses = [status for status, _ in concurrently(calls)]
        assert statuses.count(200) == 5 and statuses.count(429) == 15, statuses
    assert server.process.returncode is not None


def test_memory_store_refuses_to_start_under_several_workers(tmp_path: Path) -> None:
    with running(
        "gunicorn", tmp_path, workers=4, extra_env={"CHIO_REPLAY_STORE": "memory://"}
    ) as server:
        assert server.process.wait(timeout=60) != 0
    assert (
        "replay_store: memory:// keeps replay and budget state per process"
        in server.log.read_text()
    )


def test_the_replay_test_catches_per_process_state(tmp_path: Path) -> None:
    """Four single-worker servers on one socket, each with its own memory store: the hole."""
    import signal
    import socket
    import subprocess
    import sys

    from .servers import ISSUER, KERNEL, ROOT

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    port = listener.getsockname()[1]
    env = {
        **os.environ,
        "CHIO_SIGNING_KEY": KERNEL.seed_hex(),
        "CHIO_TRUSTED_ISSUERS": json.dumps([ISSUER.public_key.hex]),
        "CHIO_RECEIPT_SINK": "memory",
        "CHIO_REPLAY_STORE": "memory://",
        "PYTHONPATH": str(ROOT),
    }
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    processes = [
        subprocess.Popen(
            [
                gunicorn,
                "examples.flask_app.app:app",
                "--bind",
                f"fd://{listener.fileno()}",
                "--workers",
                "1",
                "--threads",
                "1",
            ],
            env=env,
            cwd=ROOT,
            pass_fds=(listener.fileno(),),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(4)
    ]
    listener.close()
    try:
        now = int(time.time())
        cap = notes_capability(now)
        accepted = 0
        for _ in range(5):  # bounded: the kernel decides which process accepts each connection
            headers = agent_headers("GET", "/notes", cap=cap, issued_at=now)
            statuses = [
                s
                for s, _ in concurrently(
                    [(f"http://127.0.0.1:{port}", "GET", "/notes", headers, b"")] * CONCURRENCY
                )
            ]
            accepted = statuses.count(200)
            if accepted > 1:
                break
        assert accepted > 1, "per-process stores should have accepted the same proof more than once"
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=20)
