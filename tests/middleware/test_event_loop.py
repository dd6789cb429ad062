"""On ASGI, a store or sink that has to wait never blocks the event loop.

Another process holds the SQLite database (or the receipt log lock); a request that needs it
is started first, then ``GET /health``, which does not use the store. Both run as tasks of
one event loop: ``/health`` must finish while the first request is still waiting, which is
impossible when the wait blocks the loop. No sleeps: the order of completion is the result.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from chio_middleware.asgi import ChioMiddleware
from chio_middleware.core.clock import FixedClock
from chio_middleware.sinks.jsonl import JsonlSink
from chio_middleware.stores import open_store

from .harness import NOW, agent_headers, settings, starlette_app
from .test_asgi_raw import http_scope

HOLD_SQLITE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""

HOLD_FLOCK = """
import fcntl, sys
handle = open(sys.argv[1], "a")
fcntl.flock(handle, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


@contextmanager
def held_by_another_process(code: str, target: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process holding a lock on ``target`` until released (its stdin closed)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    try:
        yield holder
    finally:
        release(holder)


def release(holder: subprocess.Popen[bytes]) -> None:
    if holder.stdin is not None and not holder.stdin.closed:
        holder.stdin.close()
        holder.wait(timeout=20)


async def request(mw: ChioMiddleware, method: str, path: str, headers: dict[str, str]) -> Any:
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await mw(http_scope(method, path, list(headers.items())), receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


async def store_request_then_health(mw: ChioMiddleware, holder: subprocess.Popen[bytes]) -> None:
    waiting = asyncio.create_task(request(mw, "GET", "/notes", agent_headers("GET", "/notes")))
    health = asyncio.create_task(request(mw, "GET", "/health", {}))
    done, _ = await asyncio.wait({waiting, health}, return_when=asyncio.FIRST_COMPLETED)
    assert done == {health}, "GET /health waited for the request blocked on the lock"
    assert health.result()[0] == 200
    release(holder)  # now the waiting request can go on, within its deadline
    status, body = await waiting
    assert status == 200, body


def test_health_is_answered_while_the_sqlite_database_is_locked(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    store = open_store(f"sqlite:///{database}", timeout=20)  # a long wait, never reached
    mw = ChioMiddleware(
        starlette_app(), settings=settings(), clock=FixedClock(NOW), store=store, sink=None
    )
    with held_by_another_process(HOLD_SQLITE, database) as holder:
        asyncio.run(store_request_then_health(mw, holder))
    mw.runtime.close()


def test_health_waits_no_longer_than_the_lock_timeout_for_a_held_log_lock(
    tmp_path: Path,
) -> None:
    log = tmp_path / "receipts.jsonl"
    sink = JsonlSink(log, fsync="never", lock_timeout=0.05)
    mw = ChioMiddleware(starlette_app(), settings=settings(), clock=FixedClock(NOW), sink=sink)
    with held_by_another_process(HOLD_FLOCK, Path(f"{log}.lock")):
        status, body = asyncio.run(request(mw, "GET", "/health", {}))
        assert status == 503 and json.loads(body)["error"] == "chio_unavailable"
    status, body = asyncio.run(request(mw, "GET", "/health", {}))  # by itself once released
    assert status == 200, body
    mw.runtime.close()


def test_a_held_log_lock_is_waited_for_off_the_event_loop(tmp_path: Path) -> None:
    log = tmp_path / "receipts.jsonl"
    sink = JsonlSink(log, fsync="never", lock_timeout=20)  # a long wait, never reached
    mw = ChioMiddleware(starlette_app(), settings=settings(), clock=FixedClock(NOW), sink=sink)

    async def scenario(holder: subprocess.Popen[bytes]) -> None:
        waiting = asyncio.create_task(request(mw, "GET", "/health", {}))
        ticks = 0

        async def loop_is_free() -> None:
            nonlocal ticks
            for _ in range(100):
                await asyncio.sleep(0)
                ticks += 1

        free = asyncio.create_task(loop_is_free())
        done, _ = await asyncio.wait({waiting, free}, return_when=asyncio.FIRST_COMPLETED)
        assert done == {free} and ticks == 100, "the log lock was waited for on the event loop"
        release(holder)
        assert (await waiting)[0] == 200

    with held_by_another_process(HOLD_FLOCK, Path(f"{log}.lock")) as holder:
        asyncio.run(scenario(holder))
    mw.runtime.close()


def test_the_lock_timeout_setting_reaches_the_sink(tmp_path: Path) -> None:
    log = tmp_path / "receipts.jsonl"
    mw = ChioMiddleware(
        starlette_app(),
        settings=settings(receipt_sink=f"jsonl:{log}", receipt_lock_timeout=0.3),
        clock=FixedClock(NOW),
    )
    assert isinstance(mw.runtime.sink, JsonlSink) and mw.runtime.sink.lock_timeout == 0.3
    mw.runtime.close()


def test_uncontended_store_and_sink_calls_stay_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No thread hand-off when nothing waits: the fast path costs what it did."""
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    sink = JsonlSink(tmp_path / "receipts.jsonl", fsync="never")
    mw = ChioMiddleware(
        starlette_app(), settings=settings(), clock=FixedClock(NOW), store=store, sink=sink
    )

    async def no_thread(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a call went to a worker thread although nothing waited")

    monkeypatch.setattr(asyncio, "to_thread", no_thread)
    for _ in range(3):
        status, body = asyncio.run(request(mw, "GET", "/notes", agent_headers("GET", "/notes")))
        assert status == 200, body
    mw.runtime.close()


def test_requests_that_find_the_log_lock_held_go_to_one_worker_thread_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One hop per event loop: the rest wait for it, then record on the loop.

    Eight requests find the log lock held by another process. The first records in a worker
    thread (it waits for the lock there); the others find the sink busy with that worker and
    wait for it off the loop. Once the holder lets go, they record on the loop: one thread
    hand-off in all, where each used to take its own and keep the lock busy for the next.
    """
    log = tmp_path / "receipts.jsonl"
    sink = JsonlSink(log, fsync="never", lock_timeout=20)  # a long wait, never reached
    mw = ChioMiddleware(starlette_app(), settings=settings(), clock=FixedClock(NOW), sink=sink)
    real_to_thread = asyncio.to_thread
    hops = running = most = 0

    async def counted(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        nonlocal hops, running, most
        hops += 1
        running += 1
        most = max(most, running)
        try:
            return await real_to_thread(fn, *args, **kwargs)
        finally:
            running -= 1

    monkeypatch.setattr(asyncio, "to_thread", counted)

    async def scenario(holder: subprocess.Popen[bytes]) -> None:
        waiting = [asyncio.create_task(request(mw, "GET", "/health", {})) for _ in range(8)]
        for _ in range(100):  # all eight reach the sink, and none finishes while it is held
            await asyncio.sleep(0)
        assert not any(task.done() for task in waiting)
        assert hops == 1
        release(holder)
        assert [(await task)[0] for task in waiting] == [200] * 8

    with held_by_another_process(HOLD_FLOCK, Path(f"{log}.lock")) as holder:
        asyncio.run(scenario(holder))
    assert (hops, most) == (1, 1)
    mw.runtime.close()
    assert len(log.read_bytes().splitlines()) == 8
