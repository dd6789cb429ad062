"""The pure ASGI middleware (Starlette, FastAPI, any ASGI app).

``app.add_middleware(ChioMiddleware, settings=ChioSettings(...))``. HTTP requests are
buffered up to ``max_body_bytes``, evaluated by the core, and either answered with the
PROTOCOL.md 8 error or passed to the app with the body replayed unchanged; the receipt is
signed when the response starts, with the status the client gets, and added to its
headers. ``lifespan`` passes through (the sink is flushed at shutdown); ``websocket`` is
refused unless ``websocket="allow_unverified"``. Nothing else is held back, so streaming
responses stream.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, TypeVar

from .core.clock import Clock
from .core.engine import Evaluation
from .core.errors import BadRequest, ChioError, PayloadTooLarge, Unavailable, log_field
from .core.federation import PeerStore
from .core.guards import Guard
from .core.replay import ReplayStore, as_async
from .core.request import RequestView, parse_content_length, parse_wire_query
from .core.routing import RouteMatch
from .federation import async_peer_view
from .integrations._declare import route_for, wrapped_apps
from .integrations.coverage import starlette_coverage
from .integrations.dispatch import ASGI_CHECKED, asgi_expectations, install_asgi_check
from .integrations.starlette_routing import (
    find_router,
    native_route,
    router_of,
    stack_contains,
    sub_routers,
)
from .logs import get_logger
from .runtime import ChioRuntime, DenialRenderer, render_with
from .settings import ChioSettings
from .sinks import ReceiptSink, SinkBusy, without_waiting

__all__ = ["ChioMiddleware", "ChioStartupError"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = get_logger()

T = TypeVar("T")


class ChioStartupError(RuntimeError):
    """The middleware cannot start: its message names the setting at fault."""


class _ClientGone(Exception):
    """The client disconnected before the request body was complete."""


class ChioMiddleware:
    """Verify, guard and receipt every HTTP request to the wrapped ASGI app."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: ChioSettings | None = None,
        clock: Clock | None = None,
        guards: Sequence[Guard] = (),
        store: ReplayStore | None = None,
        sink: ReceiptSink | None = None,
        runtime: ChioRuntime | None = None,
        render_denial: DenialRenderer | None = None,
        peers: PeerStore | None = None,
    ) -> None:
        self.app = app
        self._startup_error: str | None = None
        #: The hop of ``_hop`` running for each event loop (removed when it is done).
        self._in_flight: dict[asyncio.AbstractEventLoop, asyncio.Future[Any]] = {}
        #: Calls that found the sink busy and ran in a worker thread (``_hop``) since start:
        #: a figure for load tests (``benchmarks/bench_e2e.py`` prints it); near zero when
        #: one process writes the log.
        self.worker_hops = 0
        self._own_router = find_router(app)
        # FastAPI sets scope["root_path"] to its root_path when called; wrapped from
        # outside, this middleware runs first and must route on the scope FastAPI will.
        self._root_path = _fastapi_root_path(app, self._own_router)
        self._checked_routers: set[int] = set()
        self._hooked: set[int] = set()  # routers whose entry check is in place
        if self._own_router is not None:
            self._install_dispatch_check(self._own_router)
        self._routers: weakref.WeakKeyDictionary[Any, Any | None] = weakref.WeakKeyDictionary()
        self._render_denial = render_denial
        self._coverage_refusal: str | None = None
        try:
            self.runtime = runtime or ChioRuntime(
                settings, clock=clock, guards=guards, store=store, sink=sink, peers=peers
            )
        except Exception as exc:
            if not _built_lazily_by_starlette():
                raise
            # Starlette builds its middleware stack at the first call (the lifespan), and
            # uvicorn's default lifespan mode swallows an exception raised there: answer
            # the lifespan with startup.failed instead, so the server stops (issue 9).
            self._startup_error = f"chio_middleware configuration is invalid: {exc}"
            logger.error("chio_configuration_invalid", error=self._startup_error)
            return
        self.settings = self.runtime.settings
        self.store = as_async(self.runtime.store)
        self.peers = None if self.runtime.peers is None else async_peer_view(self.runtime.peers)
        self._blocking_sink = getattr(self.runtime.sink, "blocking", False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if self._startup_error is not None:
            await self._refuse_everything(scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self.app(scope, receive, self._lifespan_send(scope, send))
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _refuse_everything(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A misconfigured middleware: fail the lifespan start-up; 503 whatever else comes."""
        if scope["type"] == "lifespan":
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.failed", "message": self._startup_error})
                # Servers stop on startup.failed; raising too ends the lifespan for those
                # (and test clients) that wait for the app to return.
                raise ChioStartupError(str(self._startup_error))
            return
        if scope["type"] == "http":
            body = b'{"error":"chio_unavailable","message":"misconfigured","status":503}'
            headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
            await _send_whole(send, 503, headers, body)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1011, "reason": "chio: misconfigured"})

    def _lifespan_send(self, scope: Scope, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                failure = self._check_coverage(scope)
                if failure is not None:
                    # Starlette's lifespan turns this into lifespan.startup.failed.
                    raise ChioStartupError(failure)
            if message["type"] == "lifespan.shutdown.complete":
                aclose = getattr(self.store, "aclose", None)
                if aclose is not None:  # an async client's pool lives on this loop
                    await aclose()
                await asyncio.to_thread(self.runtime.close)
            await send(message)

        return lifespan_send

    def _check_coverage(self, scope: Scope) -> str | None:
        """Log which framework routes are bound; the failure under ``unbound_routes=refuse``."""
        router = self._router(scope)
        if router is None:
            return None
        rows = starlette_coverage(router, self.runtime.engine.config.routes)
        _warn_inner_middleware(scope.get("app"))
        return self.runtime.report_coverage(rows)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.settings.websocket == "allow_unverified":
            logger.warning("chio_websocket_unverified", path=log_field(scope.get("path")))
            await self.app(scope, receive, send)
            return
        message = await receive()
        if message["type"] == "websocket.connect":
            # Closing before accept makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": "chio: refused"})

    def _router(self, scope: Scope) -> Any | None:
        """The Starlette/FastAPI router that will dispatch this request, when there is one.

        The wrapped app itself (``ChioMiddleware(app)``), or ``scope["app"]`` when this
        middleware sits in that app's own middleware stack (``app.add_middleware``).
        """
        if self._own_router is not None:
            return self._own_router
        app = scope.get("app")
        if app is None:
            return None
        try:
            return self._routers[app]
        except KeyError:
            router = self._routers[app] = router_of(app) if stack_contains(app, self) else None
            if router is not None:
                self._install_dispatch_check(router)
            return router

    def _install_dispatch_check(self, router: Any) -> None:
        """Each router's entry compares the request with the one checked (``dispatch``);
        the top router's and every mounted one's (the walk goes through them all)."""
        routers = list(sub_routers(router))
        if all([install_asgi_check(node) for node in routers]):
            self._checked_routers.add(id(router))
            self._hooked.update(id(node) for node in routers)
        else:
            logger.warning(
                "chio_dispatch_check_unavailable",
                router=type(router).__name__,
                message="a middleware between Chio and this router could change the "
                "route dispatched after the check; install Chio innermost",
            )

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        engine = self.runtime.engine
        if self._root_path:
            scope["root_path"] = self._root_path  # what FastAPI.__call__ does, first
        view, query_error = _request_view(scope)
        router = self._router(scope)
        resolve = None
        walked: list[Any] = []
        if router is not None:
            table = engine.config.routes

            def resolve() -> RouteMatch | None:
                native = native_route(router, scope)
                walked.append(native)
                return route_for(native, view.method, view.route_path or view.path, table)

        evaluation = engine.start(view, resolve)
        if router is not None and not self.runtime.coverage_reported:
            # No lifespan ran (``--lifespan off``): the start-up check happens now.
            self._coverage_refusal = self._check_coverage(scope)
        try:
            if self._coverage_refusal is not None:  # the reason is in the server log
                raise Unavailable("the middleware's configuration was refused; see the log")
            if query_error is not None:
                raise query_error
            body = await self._read_body(receive, view, evaluation.body_limit)
        except _ClientGone:
            return
        except ChioError as exc:
            engine.reject(evaluation, exc)
        else:
            evaluation.request = view.with_body(body)
            await engine.evaluate(evaluation, self.store, self.peers)
            if self.runtime.decision_mode:  # records a receipt: off the loop if it blocks
                await self._sink_call(self.runtime.admit, evaluation)
            else:
                self.runtime.admit(evaluation)
        if evaluation.error is not None:
            await self._send_error(evaluation, evaluation.error, send)
            return
        if evaluation.answer is not None:  # the federation handshake: answered here
            await _send_whole(send, *await self._sink_call(self.runtime.render_answer, evaluation))
            return
        if walked and id(router) in self._checked_routers:
            trail = walked[0].trail
            for node, _ in trail:  # a router mounted since: its entry check, now
                if id(node) not in self._hooked and install_asgi_check(node):
                    self._hooked.add(id(node))
            scope[ASGI_CHECKED] = asgi_expectations(trail, walked[0].header_names)
        await self._call_app(scope, receive, evaluation, send)

    async def _read_body(self, receive: Receive, view: RequestView, limit: int | None) -> bytes:
        limit = self.settings.max_body_bytes if limit is None else limit
        lengths = view.header_values("content-length")
        if len(lengths) > 1:
            raise BadRequest("Content-Length appears more than once")
        declared = parse_content_length(lengths[0]) if lengths else None
        if declared is not None and declared > limit:
            raise PayloadTooLarge(f"body is larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body is larger than {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if declared is not None and len(body) != declared:
            raise BadRequest("body length does not match Content-Length")
        return body

    async def _sink_call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a call that records a receipt, never waiting on the event loop: in a worker
        thread when the sink blocks, or when the sink would wait (the log lock is held
        elsewhere: ``SinkBusy`` under ``without_waiting``, nothing recorded yet)."""
        if self._blocking_sink:
            return await asyncio.to_thread(fn, *args)
        try:
            return without_waiting(fn, *args)
        except SinkBusy:
            return await self._hop(fn, args)

    async def _hop(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        """``fn`` in a worker thread, one hop at a time per event loop while it is quick.

        A worker that records holds the sink's lock, and releases the GIL while it signs and
        writes: a request on the loop then finds the lock held and would hop too, and so
        on, each hop keeping the lock busy for the next. So a request that finds a hop in
        flight on its loop waits for it (at most ``receipt_lock_timeout``, off the loop),
        then tries again on the loop, where the lock is free again unless another thread
        or process holds it. Still busy, it hops itself: a lock held elsewhere, or a hop
        that hangs, costs each request at most about twice ``receipt_lock_timeout``
        (plus the wait for a free worker thread), never a queue behind the others.
        """
        loop = asyncio.get_running_loop()
        for gone in [other for other in self._in_flight if other.is_closed()]:
            del self._in_flight[gone]  # closed with its hop pending: its callback never ran
        pending = self._in_flight.get(loop)
        if pending is not None:
            await asyncio.wait((pending,), timeout=self.settings.receipt_lock_timeout)
            try:
                return without_waiting(fn, *args)
            except SinkBusy:
                pass
        self.worker_hops += 1
        hop: asyncio.Future[T] = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        self._in_flight[loop] = hop

        def done(_: object) -> None:
            if self._in_flight.get(loop) is hop:
                del self._in_flight[loop]
            if not hop.cancelled():
                hop.exception()  # retrieved: its owner may be gone (it raises there if not)

        hop.add_done_callback(done)
        # Shielded: a client that goes away cancels its request, not the hop the others
        # wait for (its thread runs to the end either way, and records).
        return await asyncio.shield(hop)

    async def _send_error(self, evaluation: Evaluation, error: ChioError, send: Send) -> None:
        status, headers, body = await self._sink_call(self.runtime.render_error, evaluation, error)
        if self._render_denial is not None:
            headers, body = render_with(self._render_denial, evaluation, status, headers, body)
        await _send_whole(send, status, headers, body)

    async def _call_app(
        self, scope: Scope, receive: Receive, evaluation: Evaluation, send: Send
    ) -> None:
        body = evaluation.request.body
        replayed = False
        started = False
        replaced = False  # the app's response was replaced by a 503 (sink failure)

        async def replay_receive() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: http.disconnect when the client leaves

        async def receipted_send(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                started = True
                try:
                    await self._sink_call(self.runtime.record, evaluation, int(message["status"]))
                except ChioError as exc:
                    replaced = True
                    await _send_whole(send, *self.runtime.engine.error_response(evaluation, exc))
                    return
                headers = list(message.get("headers", []))
                headers.extend(
                    (k.encode("latin-1"), v.encode("latin-1"))
                    for k, v in self.runtime.engine.response_headers(evaluation)
                )
                message = {**message, "headers": headers}
            await send(message)

        state = scope.setdefault("state", {})
        context = evaluation.context()
        state["chio"] = context
        state["chio_request_id"] = evaluation.request_id
        state["chio_capability_id"] = context.capability_id
        try:
            await self.app(scope, replay_receive, receipted_send)
        except Exception:
            if started:
                raise
            if stack_contains(scope.get("app"), self):
                # Inside a Starlette/FastAPI stack: its ServerErrorMiddleware, outside this
                # one, renders the app's own exception handler (a 500). Record that 500 and
                # let the exception go to it; the receipt is in the sink.
                await self._sink_call(self.runtime.record_crash, evaluation)
                raise
            await _send_whole(
                send, *await self._sink_call(self.runtime.render_crash, evaluation)
            )
            raise
        if not started:
            # The app returned without a response, having maybe acted: the server would
            # answer 500 with no receipt; answer it here, with the receipt (outside review).
            logger.error("chio_app_returned_without_response", request_id=evaluation.request_id)
            await _send_whole(
                send, *await self._sink_call(self.runtime.render_crash, evaluation)
            )


async def _send_whole(send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    """Send a complete response the middleware made itself."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _fastapi_root_path(app: Any, router: Any) -> str:
    """The ``root_path`` a FastAPI app between this middleware and ``router`` will set."""
    if router is None:
        return ""
    for node in wrapped_apps(app):
        if node is router:
            return ""
        root_path = getattr(node, "root_path", None)
        if getattr(node, "router", None) is router and isinstance(root_path, str):
            return root_path
    return ""


def _warn_inner_middleware(app: Any) -> None:
    """Warn about middleware inside this one: it could change the route after the check.

    Starlette runs ``user_middleware`` outermost first; entries after Chio's run between
    the check and the router (a method-override middleware there would make the router
    dispatch another route than the one checked). Install Chio innermost.
    """
    entries = list(getattr(app, "user_middleware", ()))
    names = [getattr(getattr(entry, "cls", None), "__name__", "?") for entry in entries]
    if "ChioMiddleware" not in names:
        return
    inner = names[names.index("ChioMiddleware") + 1 :]
    if inner:
        logger.warning(
            "chio_middleware_not_innermost",
            inner=", ".join(inner),
            message=(
                "these middlewares run after the Chio check and before the router; one that "
                "changes the method, path or body makes the app act on what was not checked. "
                "Add Chio last (innermost)."
            ),
        )


def _built_lazily_by_starlette() -> bool:
    """True when a Starlette app's ``build_middleware_stack`` is constructing this
    middleware (Starlette's own or a subclass's override, as FastAPI's)."""
    from starlette.applications import Starlette

    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "build_middleware_stack" and isinstance(
            frame.f_locals.get("self"), Starlette
        ):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _request_view(scope: Scope) -> tuple[RequestView, ChioError | None]:
    """Translate an HTTP scope; a malformed query is returned to be refused after routing."""
    path: str = scope.get("path", "/")
    root_path: str = scope.get("root_path", "")
    # The app routes on the path without its mount prefix; the hashes bind the full path.
    if root_path and path.startswith(root_path):
        route_path = path[len(root_path) :] or "/"
    else:
        route_path, path = path, root_path + path
    raw_path_bytes: bytes | None = scope.get("raw_path")
    raw_path = ""
    if raw_path_bytes:
        raw_path = raw_path_bytes.decode("latin-1").split("?", 1)[0]
        if root_path and raw_path.startswith(root_path):
            raw_path = raw_path[len(root_path) :] or "/"
    headers = [(name.decode("latin-1").lower(), value) for name, value in scope.get("headers", [])]
    error: ChioError | None = None
    try:
        query = parse_wire_query(scope.get("query_string", b""))
    except ChioError as exc:
        query, error = {}, exc
    if not (path.isascii() or _encodable(path)):
        # A server that decodes with surrogateescape: no hash, receipt or store could hold it.
        error = BadRequest("request path is not valid Unicode")
        path = path.encode("utf-8", "replace").decode("utf-8")
        route_path = route_path.encode("utf-8", "replace").decode("utf-8")
    client = scope.get("client")
    view = RequestView(
        method=scope.get("method", "GET").upper(),
        path=path,
        query=query,
        headers=headers,
        raw_path=raw_path,
        route_path=route_path,
        client=f"{client[0]}:{client[1]}" if client else None,
    )
    return view, error


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
