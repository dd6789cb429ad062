"""Requests as bytes on the wire, signed by the attacker's agent, and the ways to send them.

A :class:`Wire` request is what an attacker types: a method, a raw request target (any
percent-encoding, slashes, dots), raw header bytes and a body. :func:`sign` adds the
attacker's legitimate capability and a DPoP proof bound to exactly those bytes (the path
and query as the middleware decodes them, the body's hash). Then it is sent:

- :func:`asgi_call`: parsed by h11 and turned into a scope exactly as uvicorn's h11
  protocol does (``raw_path`` as sent, ``path`` percent-decoded by ``urllib.parse.unquote``);
- :func:`wsgi_call`: parsed by gunicorn's own request parser into gunicorn's own environ
  (or, where gunicorn refuses the bytes, by Werkzeug's development server's handler);
- :func:`socket_call`: over a raw socket to a real server (no client-side normalisation).
"""

from __future__ import annotations

import asyncio
import io
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote

import h11
from gunicorn.config import Config as GunicornConfig
from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.http.parser import RequestParser
from werkzeug.serving import WSGIRequestHandler

from chio_middleware.core.crypto import SigningKey
from chio_middleware.core.dpop import DpopBinding, create_dpop_proof
from chio_middleware.core.encoding import encode_header_object
from chio_middleware.core.errors import ChioError
from chio_middleware.core.hashing import body_hash, request_binding_hash
from chio_middleware.core.models import CapabilityToken
from chio_middleware.core.request import parse_query, split_target

from .spec import AGENT, CASE_HEADER, NOW


@dataclass(frozen=True)
class Wire:
    """One HTTP/1.1 request as bytes: the target and header values are sent verbatim."""

    method: str
    target: str
    headers: tuple[tuple[str, bytes], ...] = ()
    body: bytes = b""
    case: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: Send the body with ``Transfer-Encoding: chunked`` (in chunks of this size) instead
    #: of ``Content-Length``.
    chunked: int = 0

    def with_headers(self, *extra: tuple[str, bytes]) -> Wire:
        return replace(self, headers=(*self.headers, *extra))

    def raw(self, host: str = "127.0.0.1") -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1".encode("latin-1"), b"Host: " + host.encode()]
        lines.append(f"{CASE_HEADER}: {self.case}".encode())
        lines.extend(name.encode("latin-1") + b": " + value for name, value in self.headers)
        if self.chunked:
            lines.append(b"Transfer-Encoding: chunked")
        else:
            lines.append(f"Content-Length: {len(self.body)}".encode())
        lines.append(b"Connection: close")
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        if not self.chunked:
            return head + self.body
        size = self.chunked
        pieces = [self.body[i : i + size] for i in range(0, len(self.body), size)]
        framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
        return head + framed + b"0\r\n\r\n"


def seen_path_and_query(target: str) -> tuple[str, dict[str, str]] | None:
    """The path and query the middleware binds (PROTOCOL.md 6), or None if it cannot."""
    try:
        return split_target(target)
    except ChioError:
        raw_path, _, query = target.partition("?")
        try:
            return unquote(raw_path), parse_query(query)
        except ChioError:
            return None


def sign(
    wire: Wire,
    cap: CapabilityToken,
    tool: tuple[str, str] | None,
    *,
    now: int = NOW,
    key: SigningKey = AGENT,
    nonce: str | None = None,
) -> Wire:
    """Add the capability and, when ``tool`` is given, a DPoP proof for these exact bytes."""
    extra: list[tuple[str, bytes]] = [
        ("X-Chio-Capability", encode_header_object(cap.to_wire()).encode())
    ]
    seen = seen_path_and_query(wire.target)
    if tool is not None and seen is not None:
        path, query = seen
        action = request_binding_hash(wire.method, path, query, body_hash(wire.body))
        proof = create_dpop_proof(
            key, binding=DpopBinding(cap.id, tool[0], tool[1], action), issued_at=now
        )
        extra.append(("X-Chio-DPoP", encode_header_object(proof.to_wire()).encode()))
    if nonce is not None:
        extra.append(("X-Chio-Execution-Nonce", nonce.encode()))
    return wire.with_headers(*extra)


@dataclass
class Reply:
    """What came back. ``delivered`` is False when the server refused to parse the request."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    delivered: bool = True

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


def _refused() -> Reply:
    return Reply(400, [], b"", delivered=False)


# -- in process: ASGI the way uvicorn (h11) builds the scope ---------------------------------


def asgi_scope(raw: bytes) -> tuple[dict[str, Any], bytes] | None:
    """h11 parses ``raw``; the scope is built as uvicorn's ``H11Protocol`` builds it."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    try:
        event = conn.next_event()
        if not isinstance(event, h11.Request):
            return None
        body = b""
        while True:
            part = conn.next_event()
            if isinstance(part, h11.Data):
                body += part.data
            elif isinstance(part, h11.EndOfMessage):
                break
            else:
                return None
        raw_path, _, query_string = event.target.partition(b"?")
        path = unquote(raw_path.decode("ascii"))
    except (h11.RemoteProtocolError, UnicodeDecodeError):
        return None
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": event.http_version.decode("ascii"),
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": event.method.decode("ascii"),
        "root_path": "",
        "path": path,
        "raw_path": raw_path,
        "query_string": query_string,
        "headers": [(key.lower(), value) for key, value in event.headers],
        "state": {},
    }
    return scope, body


def asgi_startup(app: Any) -> str | None:
    """Run the app's lifespan startup as uvicorn does; the failure message, if it failed.

    The lifespan is left waiting for a shutdown that never comes (so nothing is closed).
    """
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await queue.put({"type": "lifespan.startup"})

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        task = asyncio.ensure_future(
            app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, queue.get, send)
        )
        while not sent and not task.done():
            await asyncio.sleep(0)
        task.cancel()

    asyncio.run(main())
    if not sent:  # the app does not speak lifespan: uvicorn ("auto") carries on
        return None
    first = sent[0]
    if first["type"] == "lifespan.startup.complete":
        return None
    return str(first.get("message", first["type"]))


def asgi_call(app: Any, wire: Wire) -> Reply:
    parsed = asgi_scope(wire.raw())
    if parsed is None:
        return _refused()
    scope, body = parsed
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # a client that stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main() -> None:
        try:
            await app(scope, receive, send)
        except Exception:
            if not any(m["type"] == "http.response.start" for m in sent):
                sent.append({"type": "http.response.start", "status": 500, "headers": []})

    asyncio.run(main())
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = [
        (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in start.get("headers", [])
    ]
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Reply(int(start["status"]), headers, payload)


# -- in process: WSGI the way gunicorn builds the environ ------------------------------------

_GUNICORN = GunicornConfig()


class _NoSocket:
    def send(self, data: bytes) -> int:
        return len(data)

    def sendall(self, data: bytes) -> None:
        return None


def wsgi_environ(raw: bytes) -> dict[str, Any] | None:
    """gunicorn's parser and ``gunicorn.http.wsgi.create`` make the environ of ``raw``."""
    try:
        parser = RequestParser(_GUNICORN, iter([raw]), ("127.0.0.1", 50000))
        request = next(parser)
        _, environ = gunicorn_wsgi.create(
            request, _NoSocket(), ("127.0.0.1", 50000), ("127.0.0.1", 8000), _GUNICORN
        )
    except Exception:  # gunicorn answers 400 to what it cannot parse
        return None
    return dict(environ)


class _DevServer:
    """What ``WSGIRequestHandler.make_environ`` reads of its server."""

    ssl_context = None
    multithread = False
    multiprocess = False
    server_address = ("127.0.0.1", 8000)
    _server_version = "Werkzeug"

    def log(self, *args: Any) -> None:
        return None


def werkzeug_environ(raw: bytes) -> dict[str, Any] | None:
    """The environ Werkzeug's development server builds for ``raw`` (its own handler's
    ``parse_request`` and ``make_environ``, on the bytes instead of a socket)."""
    handler = WSGIRequestHandler.__new__(WSGIRequestHandler)
    handler.rfile = io.BytesIO(raw)
    handler.wfile = io.BytesIO()
    handler.client_address = ("127.0.0.1", 50000)
    handler.server = _DevServer()  # type: ignore[assignment]
    handler.connection = None
    handler.close_connection = True
    handler.raw_requestline = handler.rfile.readline(65537)
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    try:
        if not handler.parse_request():
            return None
        return dict(handler.make_environ())
    except Exception:
        return None


def wsgi_call(app: Any, wire: Wire) -> Reply:
    """gunicorn's environ; for a request gunicorn refuses to parse (a header value with a
    control character, say), the one Werkzeug's server builds, since it accepts more."""
    raw = wire.raw()
    environ = wsgi_environ(raw)
    if environ is None:
        environ = werkzeug_environ(raw)
    if environ is None:
        return _refused()
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured["status"] = int(status[:3])
        captured["headers"] = [(k.lower(), v) for k, v in headers]
        return lambda _data: None

    try:
        result: Iterable[bytes] = app(environ, start_response)
        try:
            payload = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    except Exception:
        return Reply(500, [], b"")
    return Reply(captured["status"], captured["headers"], payload)


def call(kind: str, app: Any, wire: Wire) -> Reply:
    """Send ``wire`` in process to an app of framework ``kind`` (see :mod:`.apps`)."""
    if kind.split("-")[0] in ("fastapi", "starlette", "asgi"):  # see apps.is_asgi
        return asgi_call(app, wire)
    return wsgi_call(app, wire)


# -- over a socket, to a real server ---------------------------------------------------------


def socket_call(port: int, wire: Wire, host: str = "", timeout: float = 30.0) -> Reply:
    """Write ``wire`` to a socket and read one response, by its framing (a server may
    keep the connection open after answering a request whose body the app did not read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(wire.raw(host or f"127.0.0.1:{port}"))
        data = b""
        while not _complete(data, wire.method.upper() == "HEAD"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    return parse_response(data)


def _complete(data: bytes, head_request: bool = False) -> bool:
    head, found, rest = data.partition(b"\r\n\r\n")
    if not found:
        return False
    if head_request:  # a HEAD response has no body, whatever its Content-Length says
        return True
    fields = head.lower().split(b"\r\n")
    status = int(fields[0].split(b" ")[1])
    if status in (204, 304) or 100 <= status < 200:
        return True
    for line in fields[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == b"content-length":
            return len(rest) >= int(value)
        if name.strip() == b"transfer-encoding" and b"chunked" in value:
            return rest.endswith(b"0\r\n\r\n")
    return False  # delimited by close


def parse_response(data: bytes) -> Reply:
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1").strip().lower(), value.decode("latin-1").strip()))
    encoding = next((v for k, v in headers if k == "transfer-encoding"), "")
    if "chunked" in encoding.lower():
        body = b""
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body += rest[:size]
            rest = rest[size + 2 :]
        return Reply(status, headers, body)
    length = next((v for k, v in headers if k == "content-length"), None)
    return Reply(status, headers, rest if length is None else rest[: int(length)])
