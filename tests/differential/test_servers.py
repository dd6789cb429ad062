"""The routing cases (and a few body cases) against real servers over raw sockets.

uvicorn and hypercorn serve the ASGI apps, gunicorn the WSGI ones, each in its own
process on a free 127.0.0.1 port, with the records written to a JSONL file the test reads.
Requests are written byte for byte to a socket: no client library normalises the path.
The server parses the request line and builds the scope or environ itself, so these
cases also cover what each server does to ``//``, dot segments and percent-encodings
before the middleware sees them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .cases import Case, describe, tool
from .checker import chio_error, violations
from .spec import Recorder, capability
from .test_regressions import BODY_CASES, ROUTING_CASES
from .wire import Reply, Wire, sign, socket_call

ROOT = Path(__file__).resolve().parents[2]

#: (server, application factory)
SERVERS = [
    ("uvicorn", "starlette"),
    ("uvicorn", "fastapi"),
    ("uvicorn", "asgi"),
    ("hypercorn", "starlette"),
    ("gunicorn", "flask"),
    ("gunicorn", "wsgi"),
]
BODY_IDS = {
    "dup-keys-text-plain",
    "utf-16-no-content-type",
    "content-type-json-0xa0-dup-keys",
    "json-declared-as-form",
    "json-array",
    "multipart-form",
}


@dataclass
class Running:
    port: int
    recorder: Recorder
    log: Path


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, str], Running]]:
    started: dict[tuple[str, str], tuple[Running, subprocess.Popen[bytes]]] = {}

    def start(server: str, app: str) -> Running:
        if (server, app) in started:
            return started[server, app][0]
        state = tmp_path_factory.mktemp(f"{server}-{app}")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port, fd = listener.getsockname()[1], listener.fileno()
        record = state / "record.jsonl"
        bin_dir = Path(sys.executable).parent
        target = f"tests.differential.served:{app}"
        if server == "uvicorn":
            command = [str(bin_dir / "uvicorn"), "--factory", target, "--fd", str(fd),
                       "--log-level", "warning", "--http", "h11"]  # fmt: skip
        elif server == "hypercorn":
            command = [str(bin_dir / "hypercorn"), f"{target}()", "--bind", f"fd://{fd}"]
        else:
            command = [str(bin_dir / "gunicorn"), f"{target}()", "--bind", f"fd://{fd}",
                       "--workers", "1", "--log-level", "warning"]  # fmt: skip
        log = state / "server.log"
        env = {**os.environ, "DIFF_RECORD": str(record), "PYTHONPATH": str(ROOT)}
        with open(log, "wb") as out:
            process = subprocess.Popen(
                command, env=env, cwd=state, pass_fds=(fd,), stdout=out, stderr=subprocess.STDOUT
            )
        listener.close()
        running = Running(port, Recorder(record), log)
        started[server, app] = (running, process)
        return running

    yield start
    for _, process in started.values():
        process.send_signal(signal.SIGINT if process.args[0].endswith("uvicorn") else signal.SIGTERM)
    for _, process in started.values():
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _check(running: Running, label: str, wire: Wire) -> tuple[Reply, list[str], str]:
    reply = socket_call(running.port, wire)
    problems = violations(reply, running.recorder, wire.case)
    return reply, problems, describe(label, wire, reply, problems)


CASES = [*ROUTING_CASES, *(c for c in BODY_CASES if c.id in BODY_IDS)]


@pytest.mark.parametrize(("server", "app"), SERVERS, ids=[f"{s}-{a}" for s, a in SERVERS])
def test_honest_call_through_a_real_server(
    serve: Callable[[str, str], Running], server: str, app: str
) -> None:
    running = serve(server, app)
    now = int(time.time())
    honest = sign(
        Wire("GET", "/files/get?path=/workspace/a.txt"), capability(now), tool("file_get"), now=now
    )
    reply, problems, text = _check(running, f"{server}/{app}", honest)
    assert reply.status == 200 and problems == [], text
    # The records of the server process reach the test: the comparison is not empty.
    assert [c.tool for c in running.recorder.calls(honest.case)] == ["file_get"]
    assert len(running.recorder.checks(honest.case)) == 1


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize(("server", "app"), SERVERS, ids=[f"{s}-{a}" for s, a in SERVERS])
def test_case_through_a_real_server(
    serve: Callable[[str, str], Running], server: str, app: str, case: Case
) -> None:
    running = serve(server, app)
    wire = case.signed(int(time.time()))
    reply, problems, text = _check(running, f"{server}/{app}", wire)
    assert problems == [], text
    if case.expect is not None and chio_error(reply) is not None:
        assert reply.status == case.expect, text


@pytest.mark.parametrize(("server", "app"), [("uvicorn", "starlette_misbound"), ("gunicorn", "flask_misbound")])
def test_a_misbound_real_server_is_flagged(
    serve: Callable[[str, str], Running], server: str, app: str
) -> None:
    running = serve(server, app)
    wire = Wire("GET", "/files/get?path=/etc/passwd")
    reply, problems, text = _check(running, f"{server}/{app}", wire)
    assert reply.status == 200, text
    assert any("ran but the middleware checked no tool" in p for p in problems), text
