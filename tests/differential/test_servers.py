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
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from werkzeug.serving import BaseWSGIServer, make_server

from .apps import protected
from .cases import Case, describe, tool
from .checker import violations
from .spec import Recorder, attacker_grants, capability, synthetic_grant
from .strategies import requests
from .test_regressions import BODY_CASES, ROUTING_CASES
from .wire import Reply, Wire, sign, socket_call

ROOT = Path(__file__).resolve().parents[2]

#: (server, app). uvicorn and hypercorn run every ASGI app of :mod:`.served` in one
#: process each, gunicorn every WSGI app, the ``Host`` header picking the app;
#: ``werkzeug`` is Werkzeug's own development server, in a thread of this process.
SERVERS = [
    *(("uvicorn", app) for app in ("starlette", "fastapi", "fastapi_declared", "asgi")),
    *(("hypercorn", app) for app in ("starlette", "fastapi", "fastapi_declared", "asgi")),
    *(("gunicorn", app) for app in ("flask", "flask_declared", "wsgi")),
    ("werkzeug", "flask"),
    ("werkzeug", "wsgi"),
]
MISBOUND = [("uvicorn", "starlette_misbound"), ("gunicorn", "flask_misbound")]
BODY_IDS = {
    "dup-keys-text-plain",
    "utf-16-no-content-type",
    "content-type-json-0xa0-dup-keys",
    "content-type-json-0x85-dup-keys",
    "content-type-json-0x1c-dup-keys",
    "content-type-json-0x1f-dup-keys",
    "content-type-json-0x1c-shadow",
    "json-declared-as-form",
    "json-array",
    "multipart-form",
}


@dataclass
class Running:
    port: int
    recorder: Recorder
    host: str = ""


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, str], Running]]:
    processes: dict[str, tuple[int, Recorder, subprocess.Popen[bytes]]] = {}
    threads: dict[str, tuple[Running, BaseWSGIServer]] = {}

    def launch(server: str) -> tuple[int, Recorder]:
        if server in processes:
            port, recorder, _ = processes[server]
            return port, recorder
        state = tmp_path_factory.mktemp(server)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port, fd = listener.getsockname()[1], listener.fileno()
        record = state / "record.jsonl"
        bin_dir = Path(sys.executable).parent
        if server == "uvicorn":
            command = [str(bin_dir / "uvicorn"), "--factory", "tests.differential.served:asgi_by_host",
                       "--fd", str(fd), "--log-level", "warning", "--http", "h11"]  # fmt: skip
        elif server == "hypercorn":
            command = [str(bin_dir / "hypercorn"), "tests.differential.served:asgi_by_host()",
                       "--bind", f"fd://{fd}"]  # fmt: skip
        else:
            command = [str(bin_dir / "gunicorn"), "tests.differential.served:wsgi_by_host()",
                       "--bind", f"fd://{fd}", "--workers", "1", "--log-level", "warning"]  # fmt: skip
        env = {**os.environ, "DIFF_RECORD": str(record), "PYTHONPATH": str(ROOT)}
        with open(state / "server.log", "wb") as out:
            process = subprocess.Popen(
                command, env=env, cwd=state, pass_fds=(fd,), stdout=out, stderr=subprocess.STDOUT
            )
        listener.close()
        processes[server] = (port, Recorder(record), process)
        return port, processes[server][1]

    def start(server: str, app: str) -> Running:
        if server != "werkzeug":
            port, recorder = launch(server)
            return Running(port, recorder, app)
        if app not in threads:
            recorder = Recorder()
            dev = make_server("127.0.0.1", 0, protected(app, recorder))
            threading.Thread(target=dev.serve_forever, daemon=True).start()
            threads[app] = (Running(dev.server_port, recorder), dev)
        return threads[app][0]

    yield start
    for _, dev in threads.values():
        dev.shutdown()
        dev.server_close()
    for name, (_, _, process) in processes.items():
        process.send_signal(signal.SIGINT if name == "uvicorn" else signal.SIGTERM)
    for _, _, process in processes.values():
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _check(running: Running, label: str, wire: Wire) -> tuple[Reply, list[str], str]:
    reply = socket_call(running.port, wire, running.host)
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
    _, problems, text = _check(running, f"{server}/{app}", wire)
    # Only the property: a server may normalise the path before the app and the
    # middleware both see it (Werkzeug's dev server turns //files/get into /files/get).
    assert problems == [], text


@pytest.mark.parametrize(("server", "app"), MISBOUND)
def test_a_misbound_real_server_is_flagged(
    serve: Callable[[str, str], Running], server: str, app: str
) -> None:
    running = serve(server, app)
    wire = Wire("GET", "/files/get?path=/etc/passwd")
    reply, problems, text = _check(running, f"{server}/{app}", wire)
    assert reply.status == 200, text
    assert any("ran but the middleware checked no tool" in p for p in problems), text


@pytest.mark.parametrize(("server", "app"), SERVERS, ids=[f"{s}-{a}" for s, a in SERVERS])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=requests())
def test_generated_requests_through_a_real_server(
    serve: Callable[[str, str], Running],
    server: str,
    app: str,
    drawn: tuple[Wire, tuple[str, str] | None],
) -> None:
    running = serve(server, app)
    wire, signed_for = drawn
    if signed_for is not None:
        now = int(time.time())
        broad = capability(now, grants=[*attacker_grants(), synthetic_grant()])
        wire = sign(wire, broad, signed_for, now=now)
    _, problems, text = _check(running, f"{server}/{app}", wire)
    assert problems == [], text
