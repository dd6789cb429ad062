"""WSGI conformance through wsgiref.validate, and chunked bodies."""

from __future__ import annotations

import io
import json
from typing import Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

from chio_middleware.core.clock import FixedClock
from chio_middleware.core.receipts import decode_receipt_header
from chio_middleware.core.replay import MemoryReplayStore
from chio_middleware.sinks import MemorySink
from chio_middleware.wsgi import ChioWSGIMiddleware

from .harness import NOW, agent_headers, flask_app, settings

NOTE = json.dumps({"title": "t", "body": "b"}).encode()


def wrapped(**overrides: Any) -> tuple[Any, MemorySink]:
    sink = MemorySink()
    app = flask_app()
    mw = ChioWSGIMiddleware(
        app.wsgi_app,
        settings=settings(**overrides),
        clock=FixedClock(NOW),
        store=MemoryReplayStore(),
        sink=sink,
    )
    return validator(mw), sink


def call(
    app: Any,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    chunked: bool = False,
    content_length: int | None = None,
    script_name: str = "",
) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(REQUEST_METHOD=method, SCRIPT_NAME=script_name, PATH_INFO=path, QUERY_STRING="")
    environ["wsgi.input"] = io.BytesIO(body)
    if chunked:
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        environ["wsgi.input_terminated"] = True
    else:
        environ["CONTENT_LENGTH"] = str(len(body) if content_length is None else content_length)
    for key, value in headers.items():
        name = key.upper().replace("-", "_")
        environ[name if name in ("CONTENT_TYPE",) else f"HTTP_{name}"] = value
    captured: dict[str, Any] = {}

    def start_response(
        status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        captured["status"] = status
        captured["headers"] = {k.lower(): v for k, v in response_headers}
        return lambda data: None

    result = app(environ, start_response)
    try:
        payload = b"".join(result)
    finally:
        result.close()
    return captured["status"], captured["headers"], payload


def test_allowed_request_through_the_validator() -> None:
    app, sink = wrapped()
    status, headers, payload = call(
        app, "POST", "/notes", agent_headers("POST", "/notes", NOTE), NOTE
    )
    assert status.startswith("201") and json.loads(payload)["title"] == "t"
    assert decode_receipt_header(headers["x-chio-receipt"]).id == headers["x-chio-receipt-id"]
    assert sink.receipts[0].response_status == 201


def test_denied_request_through_the_validator() -> None:
    app, _ = wrapped()
    status, headers, payload = call(
        app, "POST", "/notes", {"content-type": "application/json"}, NOTE
    )
    assert status.startswith("401")
    assert json.loads(payload)["error"] == "chio_capability_required"
    assert headers["www-authenticate"] == 'ChioDPoP error="chio_capability_required"'


def test_chunked_body_is_reprovided_with_its_length() -> None:
    app, _ = wrapped()
    status, _, payload = call(
        app, "POST", "/notes", agent_headers("POST", "/notes", NOTE), NOTE, chunked=True
    )
    assert status.startswith("201") and json.loads(payload)["body"] == "b"


def test_chunked_body_over_limit_is_413() -> None:
    app, _ = wrapped(max_body_bytes=10)
    status, _, _ = call(
        app, "POST", "/notes", {"content-type": "application/json"}, b"x" * 50, chunked=True
    )
    assert status.startswith("413")


def test_merged_duplicate_headers_are_malformed() -> None:
    app, _ = wrapped()
    headers = agent_headers("POST", "/notes", NOTE)
    headers["x-chio-dpop"] = headers["x-chio-dpop"] + ", " + headers["x-chio-dpop"]
    status, _, _ = call(app, "POST", "/notes", headers, NOTE)
    assert status.startswith("400")


def test_truncated_body_is_bad_request() -> None:
    app, sink = wrapped()
    headers = agent_headers("POST", "/notes", NOTE)
    status, _, payload = call(app, "POST", "/notes", headers, NOTE[:5], content_length=len(NOTE))
    assert status.startswith("400") and json.loads(payload)["error"] == "chio_bad_request"
    assert sink.receipts[0].response_status == 400


def test_bindings_apply_under_script_name() -> None:
    app, _ = wrapped()
    read = ("srv-notes", "read_note")

    def mounted(headers: dict[str, str]) -> str:
        environ_headers = dict(headers)
        status, _, _ = call(app, "GET", "/notes/1", environ_headers, b"", script_name="/api")
        return status

    assert mounted({}).startswith("401")
    assert mounted(agent_headers("GET", "/api/notes/1", tool=read)).startswith("200")
    assert mounted(agent_headers("GET", "/notes/1", tool=read)).startswith("401")
