"""Shared test fixtures: one notes API as a Starlette and a Flask app, and a test agent.

The same behavioural table runs against both adapters through :class:`Driver`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from chio_middleware import ChioSettings, RouteBinding
from chio_middleware.asgi import ChioMiddleware
from chio_middleware.core.capability import sign_capability
from chio_middleware.core.clock import FixedClock
from chio_middleware.core.crypto import SigningKey
from chio_middleware.core.dpop import DpopBinding, create_dpop_proof
from chio_middleware.core.encoding import decode_header_object, encode_header_object
from chio_middleware.core.hashing import body_hash, request_binding_hash
from chio_middleware.core.models import CapabilityToken, HttpReceipt
from chio_middleware.core.receipts import decode_receipt_header, verify_receipt
from chio_middleware.core.replay import MemoryReplayStore
from chio_middleware.core.request import split_target
from chio_middleware.sinks import MemorySink, ReceiptSink
from chio_middleware.wsgi import ChioWSGIMiddleware

NOW = 1_760_000_000
ISSUER = SigningKey.from_seed_hex("0b" * 32)
AGENT = SigningKey.from_seed_hex("21" * 32)
KERNEL = SigningKey.from_seed_hex("22" * 32)
STRANGER = SigningKey.from_seed_hex("44" * 32)

ROUTES = [
    RouteBinding(method="GET", path="/notes", tool_server="srv-notes", tool_name="list_notes"),
    RouteBinding(
        method="GET", path="/notes/{note_id}", tool_server="srv-notes", tool_name="read_note"
    ),
    RouteBinding(method="POST", path="/notes", tool_server="srv-notes", tool_name="write_note"),
    RouteBinding(
        method="DELETE",
        path="/notes/{note_id}",
        tool_server="srv-notes",
        tool_name="delete_note",
        require_nonce=True,
    ),
    RouteBinding(
        method="POST",
        path="/files/read",
        tool_server="srv-files",
        tool_name="file_read",
        require_dpop=False,
    ),
]


def settings(**overrides: Any) -> ChioSettings:
    values: dict[str, Any] = {
        "signing_key": KERNEL.seed_hex(),
        "trusted_issuers": [ISSUER.public_key.hex],
        "routes": ROUTES,
        "receipt_sink": "memory",
        "max_body_bytes": 4096,
    }
    values.update(overrides)
    return ChioSettings(**values)


def capability(
    grants: Sequence[dict[str, Any]] | None = None,
    *,
    cap_id: str = "cap-1",
    issuer: SigningKey = ISSUER,
    subject: SigningKey = AGENT,
    issued_at: int = NOW - 60,
    expires_at: int = NOW + 3600,
) -> CapabilityToken:
    if grants is None:
        grants = [{"server_id": "srv-notes", "tool_name": "*", "operations": ["invoke"]}]
    return sign_capability(
        issuer,
        {
            "id": cap_id,
            "issuer": issuer.public_key.hex,
            "subject": subject.public_key.hex,
            "scope": {"grants": list(grants)},
            "issued_at": issued_at,
            "expires_at": expires_at,
        },
    )


def agent_headers(
    method: str,
    url: str,
    body: bytes = b"",
    *,
    cap: CapabilityToken | None = None,
    tool: tuple[str, str] | None = None,
    key: SigningKey = AGENT,
    nonce: str | None = None,
    proof: bool = True,
    issued_at: int = NOW,
    json_body: bool = True,
) -> dict[str, str]:
    """Headers a well-behaved agent sends (capability, DPoP bound to this request)."""
    cap = cap if cap is not None else capability()
    headers = {"x-chio-capability": encode_header_object(cap.to_wire())}
    if body and json_body:
        headers["content-type"] = "application/json"
    if proof:
        path, query = split_target(url)
        server, tool_name = tool if tool is not None else tool_for(method, path)
        action = request_binding_hash(method, path, query, body_hash(body))
        dpop = create_dpop_proof(
            key, binding=DpopBinding(cap.id, server, tool_name, action), issued_at=issued_at
        )
        headers["x-chio-dpop"] = encode_header_object(dpop.to_wire())
    if nonce is not None:
        headers["x-chio-execution-nonce"] = nonce
    return headers


def tool_for(method: str, path: str) -> tuple[str, str]:
    if path.startswith("/chio/tools/"):
        server, tool = path.split("/")[3:5]
        return server, tool
    for route in ROUTES:
        template = route.path.split("/")
        parts = path.split("/")
        same_shape = route.method == method and len(template) == len(parts)
        if same_shape and all(
            t.startswith("{") or t == p for t, p in zip(template, parts, strict=True)
        ):
            return route.tool_server, route.tool_name
    return "srv-notes", "none"


# -- the two applications ------------------------------------------------------------------


def starlette_app() -> Starlette:
    notes: dict[str, dict[str, Any]] = {"1": {"id": "1", "title": "first", "body": "hello"}}

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def list_notes(request: Request) -> Response:
        return JSONResponse(list(notes.values()))

    async def read_note(request: Request) -> Response:
        note = notes.get(request.path_params["note_id"])
        return JSONResponse(note) if note else JSONResponse({"error": "not found"}, 404)

    async def write_note(request: Request) -> Response:
        data = await request.json()
        note = {"id": str(len(notes) + 1), "title": data["title"], "body": data["body"]}
        notes[note["id"]] = note
        return JSONResponse(note, status_code=201)

    async def delete_note(request: Request) -> Response:
        notes.pop(request.path_params["note_id"], None)
        return Response(status_code=204)

    async def echo(request: Request) -> Response:
        return JSONResponse(
            {"body": (await request.body()).decode(), "state": request.state.chio_request_id}
        )

    async def crash(request: Request) -> Response:
        raise RuntimeError("boom")

    async def stream(request: Request) -> Response:
        async def chunks() -> Any:
            for index in range(3):
                yield f"chunk{index};".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/notes", list_notes, methods=["GET"]),
            Route("/notes", write_note, methods=["POST"]),
            Route("/notes/{note_id}", read_note, methods=["GET"]),
            Route("/notes/{note_id}", delete_note, methods=["DELETE"]),
            Route("/files/read", echo, methods=["POST"]),
            Route("/chio/tools/{server}/{tool}", echo, methods=["POST"]),
            Route("/unbound", echo, methods=["POST", "GET"]),
            Route("/crash", crash),
            Route("/stream", stream),
        ]
    )


def flask_app() -> flask.Flask:
    app = flask.Flask("notes")
    notes: dict[str, dict[str, Any]] = {"1": {"id": "1", "title": "first", "body": "hello"}}

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    @app.get("/notes")
    def list_notes() -> Any:
        return list(notes.values())

    @app.get("/notes/<note_id>")
    def read_note(note_id: str) -> Any:
        note = notes.get(note_id)
        return (note, 200) if note else ({"error": "not found"}, 404)

    @app.post("/notes")
    def write_note() -> Any:
        data = flask.request.get_json()
        note = {"id": str(len(notes) + 1), "title": data["title"], "body": data["body"]}
        notes[note["id"]] = note
        return note, 201

    @app.delete("/notes/<note_id>")
    def delete_note(note_id: str) -> Any:
        notes.pop(note_id, None)
        return "", 204

    @app.route("/files/read", methods=["POST"])
    @app.route("/chio/tools/<server>/<tool>", methods=["POST"])
    @app.route("/unbound", methods=["POST", "GET"])
    def echo(**_: str) -> Any:
        return {
            "body": flask.request.get_data().decode(),
            "state": flask.request.environ["chio.request_id"],
        }

    @app.get("/crash")
    def crash() -> Any:
        raise RuntimeError("boom")

    return app


# -- drivers -------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def receipt(self) -> HttpReceipt:
        receipt = verify_receipt(
            decode_receipt_header(self.headers["x-chio-receipt"]), trusted_keys=[KERNEL.public_key]
        )
        assert receipt.id == self.headers["x-chio-receipt-id"]
        return receipt

    def nonce(self) -> str:
        value = self.headers["x-chio-execution-nonce"]
        decode_header_object(value)
        return value


@dataclass
class Driver:
    """Sends requests to one adapter-wrapped app; records what its sink got."""

    kind: str
    send: Callable[[str, str, Sequence[tuple[str, str]], bytes], Reply]
    sink: MemorySink
    store: MemoryReplayStore
    clock: FixedClock
    middleware: Any = field(default=None)

    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Reply:
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
        return self.send(method, url, pairs, body)


def make_driver(
    kind: str,
    *,
    sink: ReceiptSink | None = None,
    guards: Sequence[Any] = (),
    store: Any = None,
    **overrides: Any,
) -> Driver:
    memory_sink = MemorySink()
    store = store if store is not None else MemoryReplayStore()
    clock = FixedClock(NOW)
    config = settings(**overrides)
    if kind == "asgi":
        app = starlette_app()
        middleware = ChioMiddleware(
            app, settings=config, clock=clock, store=store, sink=sink or memory_sink, guards=guards
        )
        client = TestClient(middleware, raise_server_exceptions=False)

        def send_asgi(
            method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes
        ) -> Reply:
            response = client.request(method, url, headers=list(headers), content=body or None)
            return Reply(
                response.status_code,
                {k.lower(): v for k, v in response.headers.items()},
                response.content,
            )

        return Driver(kind, send_asgi, memory_sink, store, clock, middleware)
    app_flask = flask_app()
    middleware_w = ChioWSGIMiddleware(
        app_flask.wsgi_app,
        settings=config,
        clock=clock,
        store=store,
        sink=sink or memory_sink,
        guards=guards,
    )
    app_flask.wsgi_app = middleware_w  # type: ignore[method-assign]
    flask_client = app_flask.test_client()

    def send_wsgi(method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes) -> Reply:
        response = flask_client.open(url, method=method, headers=list(headers), data=body)
        return Reply(
            response.status_code,
            {k.lower(): v for k, v in response.headers.items()},
            response.get_data(),
        )

    return Driver(kind, send_wsgi, memory_sink, store, clock, middleware_w)
