"""ASGI edge cases with hand-written scope/receive/send."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from chio_middleware.asgi import ChioMiddleware
from chio_middleware.core.clock import FixedClock
from chio_middleware.core.receipts import decode_receipt_header, verify_receipt
from chio_middleware.core.replay import MemoryReplayStore
from chio_middleware.sinks import MemorySink

from .harness import KERNEL, NOW, agent_headers, settings, starlette_app

NOTE = json.dumps({"title": "t", "body": "b"}).encode()


def middleware(app: Any = None, **overrides: Any) -> tuple[ChioMiddleware, MemorySink]:
    sink = MemorySink()
    mw = ChioMiddleware(
        app or starlette_app(),
        settings=settings(**overrides),
        clock=FixedClock(NOW),
        store=MemoryReplayStore(),
        sink=sink,
    )
    return mw, sink


def http_scope(
    method: str, path: str, headers: Sequence[tuple[str, str]] = (), query: str = ""
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


def run(mw: Any, scope: dict[str, Any], chunks: Sequence[bytes] = (b"",)) -> list[dict[str, Any]]:
    messages = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(mw(scope, receive, send))
    return sent


def start_of(sent: list[dict[str, Any]]) -> tuple[int, dict[bytes, list[bytes]]]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers: dict[bytes, list[bytes]] = {}
    for key, value in start["headers"]:
        headers.setdefault(key.lower(), []).append(value)
    return start["status"], headers


def body_of(sent: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_chunked_body_is_counted_and_replayed() -> None:
    mw, _ = middleware()
    headers = list(agent_headers("POST", "/notes", NOTE).items())
    sent = run(mw, http_scope("POST", "/notes", headers), [NOTE[:5], NOTE[5:12], NOTE[12:]])
    status, _ = start_of(sent)
    assert status == 201 and json.loads(body_of(sent))["title"] == "t"


def test_chunked_body_over_the_limit_is_413_without_reaching_the_app() -> None:
    reached = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope)

    mw, sink = middleware(app, max_body_bytes=10)
    sent = run(
        mw, http_scope("POST", "/notes", [("content-type", "application/json")]), [b"x" * 6] * 3
    )
    assert start_of(sent)[0] == 413 and not reached
    assert sink.receipts[0].response_status == 413


def test_content_length_over_limit_is_refused_before_reading() -> None:
    mw, _ = middleware(max_body_bytes=10)
    sent = run(mw, http_scope("POST", "/notes", [("content-length", "11")]), [b"x" * 11])
    assert start_of(sent)[0] == 413


def test_bad_content_length() -> None:
    mw, _ = middleware()
    for value in ("abc", "-1"):
        sent = run(mw, http_scope("POST", "/notes", [("content-length", value)]), [b"x"])
        assert start_of(sent)[0] == 400
    sent = run(
        mw, http_scope("POST", "/notes", [("content-length", "1"), ("content-length", "1")]), [b"x"]
    )
    assert start_of(sent)[0] == 400


def test_duplicate_chio_headers_are_refused() -> None:
    mw, _ = middleware()
    headers = list(agent_headers("POST", "/notes", NOTE).items())
    headers.append(("x-chio-dpop", dict(headers)["x-chio-dpop"]))
    sent = run(mw, http_scope("POST", "/notes", headers), [NOTE])
    status, _ = start_of(sent)
    assert status == 400
    assert "appears more than once" in json.loads(body_of(sent))["message"]


def test_invalid_utf8_query_is_bad_request() -> None:
    mw, _ = middleware()
    sent = run(mw, http_scope("GET", "/health", query="q=%ff"))
    assert start_of(sent)[0] == 400


def test_disconnect_before_the_body_ends_reaches_nothing() -> None:
    reached = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope)

    mw, sink = middleware(app)
    sent: list[Any] = []
    messages = [
        {"type": "http.request", "body": b"x", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Any:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(mw(http_scope("POST", "/notes"), receive, send))
    assert not reached and not sent and not sink.receipts


def test_streaming_response_keeps_streaming_with_receipt_headers() -> None:
    mw, _ = middleware()
    sent = run(mw, http_scope("GET", "/stream"))
    status, headers = start_of(sent)
    assert status == 200 and b"x-chio-receipt" in headers
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert len(bodies) >= 3 and body_of(sent) == b"chunk0;chunk1;chunk2;"
    receipt = verify_receipt(
        decode_receipt_header(headers[b"x-chio-receipt"][0].decode()),
        trusted_keys=[KERNEL.public_key],
    )
    assert receipt.id == headers[b"x-chio-receipt-id"][0].decode()


def test_crash_before_start_sends_500_with_receipt_and_reraises() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    mw, sink = middleware(app)
    try:
        run(mw, http_scope("GET", "/health"))
    except RuntimeError:
        pass
    else:  # pragma: no cover
        raise AssertionError("the app's exception must propagate")
    assert sink.receipts[0].response_status == 500


def test_lifespan_passes_through_and_shutdown_flushes_the_sink() -> None:
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            events.append(message["type"])
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    mw, sink = middleware(app)
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    outbox: list[str] = []

    async def receive() -> Any:
        return inbox.pop(0)

    async def send(message: Any) -> None:
        outbox.append(message["type"])

    asyncio.run(mw({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    assert events == ["lifespan.startup", "lifespan.shutdown"]
    assert outbox == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert sink.closed


def websocket_exchange(mw: Any) -> tuple[list[Any], list[Any]]:
    reached: list[Any] = []
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(mw({"type": "websocket", "path": "/ws", "headers": []}, receive, send))
    return reached, sent


def test_websocket_is_refused_unless_allowed() -> None:
    reached: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["type"])

    mw, _ = middleware(app)
    _, sent = websocket_exchange(mw)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "chio: refused"}]
    assert not reached
    mw_open, _ = middleware(app, websocket="allow_unverified")
    websocket_exchange(mw_open)
    assert reached == ["websocket"]


def test_bindings_apply_under_a_mount_prefix_and_proofs_bind_the_full_path() -> None:
    """The app routes on the path without root_path; the binding must follow it."""
    mw, _ = middleware()

    def mounted(headers: list[tuple[str, str]]) -> tuple[int, Any]:
        scope = http_scope("GET", "/api/notes/1", headers)
        scope["root_path"] = "/api"
        status, out = start_of(run(mw, scope))
        return status, decode_receipt_header(out[b"x-chio-receipt"][0].decode())

    status, receipt = mounted([])
    assert status == 401 and receipt.route_pattern == "/notes/{note_id}"
    read = ("srv-notes", "read_note")
    status, receipt = mounted(list(agent_headers("GET", "/api/notes/1", tool=read).items()))
    assert status == 200 and receipt.route_pattern == "/notes/{note_id}"
    status, _ = mounted(list(agent_headers("GET", "/notes/1", tool=read).items()))
    assert status == 401  # a proof for the unprefixed path does not bind this request


def test_encoded_slash_cannot_move_the_reserved_tool_prefix() -> None:
    mw, _ = middleware()
    url = "/chio/tools/srv-admin/wipe"
    scope = http_scope(
        "POST", url, list(agent_headers("POST", url, NOTE, tool=("2Fsrv-admin", "wipe")).items())
    )
    scope["raw_path"] = b"/chio/tools%2Fsrv-admin/wipe"
    status, _ = start_of(run(mw, scope, [NOTE]))
    assert status == 400


def test_head_uses_its_own_binding_and_falls_back_to_get() -> None:
    from chio_middleware import RouteBinding
    from chio_middleware.core.routing import RouteTable

    table = RouteTable(
        [
            RouteBinding(method="HEAD", path="/f/{id}", tool_server="s", tool_name="head_f"),
            RouteBinding(method="GET", path="/f/{id}", tool_server="s", tool_name="get_f"),
            RouteBinding(method="GET", path="/g/{id}", tool_server="s", tool_name="get_g"),
        ]
    )
    assert table.match("HEAD", "/f/1").tool_name == "head_f"  # type: ignore[union-attr]
    assert table.match("GET", "/f/1").tool_name == "get_f"  # type: ignore[union-attr]
    assert table.match("HEAD", "/g/1").tool_name == "get_g"  # type: ignore[union-attr]
