"""The review findings under real servers on 127.0.0.1, with raw sockets (no client lib)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from ..e2e.servers import running
from ..middleware.harness import agent_headers, capability
from .test_review_findings import NARROW


def _raw(url: str, request: bytes) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _get(url: str, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return _raw(url, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


def test_f1_header_parameter_under_uvicorn(tmp_path: Path) -> None:
    now = int(time.time())
    cap = capability(NARROW, issued_at=now - 5, expires_at=now + 3600)
    target = "/files/read?path=/workspace/notes.txt"
    headers = agent_headers("GET", target, cap=cap, tool=("srv-files", "read_file"), issued_at=now)
    headers["X-Target"] = "/etc/shadow"
    with running("uvicorn", tmp_path, app="tests.review.served:fastapi_app") as server:
        status, body = _get(server.url, target, headers)
    assert status >= 400 or json.loads(body) == {"read": "/workspace/notes.txt"}, (status, body)


def test_f2_wrapped_mount_under_uvicorn(tmp_path: Path) -> None:
    with running("uvicorn", tmp_path, app="tests.review.served:fastapi_app") as server:
        status, body = _get(server.url, "/v1/read?path=/etc/shadow", {})
    assert status >= 400, (status, body)


@pytest.mark.parametrize(
    "target", ["/files/read?path=/etc/shadow", "http://127.0.0.1/files/read?path=/etc/shadow"]
)
def test_f5_flask_behind_proxyfix_under_gunicorn(tmp_path: Path, target: str) -> None:
    with running("gunicorn", tmp_path, app="tests.review.served:flask_app") as server:
        status, body = _get(server.url, target, {})
    assert status >= 400, (status, body)
