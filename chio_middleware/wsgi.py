"""The native WSGI middleware (Flask, any WSGI app); not an ASGI bridge.

``app.wsgi_app = ChioWSGIMiddleware(app.wsgi_app, settings=ChioSettings(...))``. The body
is read from ``wsgi.input`` within ``max_body_bytes`` (Content-Length first; chunked bodies
counted as they arrive) and re-provided as a fresh stream with its exact length, without
``Transfer-Encoding: chunked`` so Flask reads it. The receipt is signed when the app calls
``start_response``, with that status, and its headers are added there.
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any

from ._logging import log_failure
from .core.clock import Clock
from .core.engine import Evaluation, run_sync
from .core.errors import BadRequest, ChioError, PayloadTooLarge, Unavailable
from .core.federation import PeerStore
from .core.guards import Guard
from .core.replay import MemoryReplayStore, ReplayStore, SyncStoreAsAsync
from .core.request import RequestView, parse_content_length, parse_wire_query
from .core.routing import RouteMatch
from .integrations._declare import NativeRoute, route_for, wrapped_apps
from .integrations.dispatch import (
    WSGI_CHECKED,
    WSGI_CHECKED_PARAMS,
    install_flask_check,
    wsgi_inputs,
)
from .logs import get_logger
from .runtime import ChioRuntime, DenialRenderer, render_with
from .settings import ChioSettings
from .sinks import ReceiptSink

__all__ = ["ChioWSGIMiddleware"]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

logger = get_logger()

_READ_CHUNK = 64 * 1024


class ChioWSGIMiddleware:
    """Verify, guard and receipt every request to the wrapped WSGI app."""

    def __init__(
        self,
        app: WSGIApp,
        *,
        settings: ChioSettings | None = None,
        clock: Clock | None = None,
        guards: Sequence[Guard] = (),
        store: ReplayStore | None = None,
        sink: ReceiptSink | None = None,
        runtime: ChioRuntime | None = None,
        render_denial: DenialRenderer | None = None,
        peers: PeerStore | None = None,
        flask_app: Any | None = None,
    ) -> None:
        self.app = app
        self.runtime = runtime or ChioRuntime(
            settings, clock=clock, guards=guards, store=store, sink=sink, peers=peers
        )
        self._render_denial = render_denial
        #: Run once, before the first request is evaluated: an integration's late check
        #: (Flask routes registered after ``init_app``); a message refuses every request.
        self.first_request_check: Callable[[], str | None] | None = None
        self._refusal: str | None = None
        self._first_lock = threading.Lock()
        self.settings = self.runtime.settings
        self.store = SyncStoreAsAsync(self.runtime.store)
        self._per_process_store = isinstance(self.runtime.store, MemoryReplayStore)
        self._loops = threading.local()
        self._flask, self._native = _flask_router(flask_app if flask_app is not None else app)
        if self._flask is not None:  # Flask's routing, checked again where Flask dispatches
            install_flask_check(self._flask)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self.first_request_check is not None:
            self._run_first_request_check()
        engine = self.runtime.engine
        try:
            view = _request_view(environ)
            error: ChioError | None = None
        except ChioError as exc:
            view, error = _fallback_view(environ), exc
        evaluation = engine.start(view, self._resolver(environ, view) if error is None else None)
        if self._refusal is not None:  # the reason is in the server log, not for clients
            error = Unavailable("the middleware's configuration was refused; see the server log")
        if error is None and environ.get("wsgi.multiprocess") and self._per_process_store:
            # The server runs several worker processes (e.g. workers set in a gunicorn
            # config file): a per-process store would accept a replay once per worker.
            logger.error("chio_per_process_store_under_workers", replay_store="memory://")
            error = Unavailable(
                "replay_store memory:// cannot protect several worker processes; refusing"
            )
        if error is None:
            try:
                body = self._read_body(environ, view, evaluation.body_limit)
            except ChioError as exc:
                error = exc
        if error is not None:
            engine.reject(evaluation, error)
        else:
            evaluation.request = view.with_body(body)
            self._evaluate(evaluation)
            self.runtime.admit(evaluation)
        if evaluation.error is not None:
            status, headers, payload = self.runtime.render_error(evaluation, evaluation.error)
            if self._render_denial is not None:
                headers, payload = render_with(
                    self._render_denial, evaluation, status, headers, payload
                )
            start_response(_status_line(status), headers)
            return [payload]
        if evaluation.answer is not None:  # the federation handshake: answered here
            status, headers, payload = self.runtime.render_answer(evaluation)
            start_response(_status_line(status), headers)
            return [payload]
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        context = evaluation.context()
        environ["chio"] = context
        environ["chio.request_id"] = evaluation.request_id
        environ["chio.capability_id"] = context.capability_id
        if self._flask is not None:
            environ[WSGI_CHECKED] = wsgi_inputs(environ)
            if evaluation.route is not None:
                environ[WSGI_CHECKED_PARAMS] = dict(evaluation.route.params)
        return self._call_app(environ, start_response, evaluation)

    def _run_first_request_check(self) -> None:
        with self._first_lock:
            check, self.first_request_check = self.first_request_check, None
            if check is not None:
                self._refusal = check()

    def _resolver(
        self, environ: dict[str, Any], view: RequestView
    ) -> Callable[[], RouteMatch | None] | None:
        """Flask's own router for this request, when the wrapped app is a Flask app."""
        app, native_route = self._flask, self._native
        if app is None or native_route is None:
            return None
        table = self.runtime.engine.config.routes

        def resolve() -> RouteMatch | None:
            native = native_route(app, environ)
            return route_for(native, view.method, view.route_path or view.path, table)

        return resolve

    def _evaluate(self, evaluation: Evaluation) -> None:
        coroutine = self.runtime.engine.evaluate(evaluation, self.store)
        if not self.runtime.engine.has_async_guards:
            run_sync(coroutine)
            return
        # An application guard is async: give this thread an event loop of its own.
        runner = getattr(self._loops, "runner", None)
        if runner is None:
            runner = self._loops.runner = asyncio.Runner()
        runner.run(coroutine)

    def _read_body(self, environ: dict[str, Any], view: RequestView, limit: int | None) -> bytes:
        limit = self.settings.max_body_bytes if limit is None else limit
        stream = environ.get("wsgi.input")
        length_text = environ.get("CONTENT_LENGTH", "")
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if length_text and not chunked:
            length = parse_content_length(length_text)
            if length > limit:
                raise PayloadTooLarge(f"body is larger than {limit} bytes")
            body = stream.read(length) if stream is not None and length else b""
            if len(body) != length:
                raise BadRequest("body is shorter than Content-Length")
            return bytes(body)
        if not chunked or stream is None:
            return b""
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = stream.read(_READ_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body is larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _call_app(
        self, environ: dict[str, Any], start_response: StartResponse, evaluation: Evaluation
    ) -> Iterable[bytes]:
        state: dict[str, Any] = {"replaced": None, "started": False}

        def receipted_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            if state["started"] and exc_info is None:
                raise AssertionError("start_response called twice without exc_info")
            state["started"] = True
            try:
                self.runtime.record(evaluation, int(status[:3]))
            except ChioError as exc:
                code, error_headers, payload = self.runtime.engine.error_response(evaluation, exc)
                state["replaced"] = payload
                start_response(_status_line(code), error_headers, exc_info)
                return lambda _data: None
            extra = self.runtime.engine.response_headers(evaluation)
            return start_response(status, [*headers, *extra], exc_info)

        try:
            result = self.app(environ, receipted_start_response)
        except Exception:
            if state["started"]:
                raise
            return self._crash(evaluation, start_response)
        if state["replaced"] is not None:
            _close(result)
            return [state["replaced"]]
        return _ClosingIterator(result, state)

    def _crash(self, evaluation: Evaluation, start_response: StartResponse) -> Iterable[bytes]:
        failure = sys.exc_info()[1]
        assert failure is not None  # called from the except clause of _call_app
        # Never exc_info: a renderer may print frame locals (rich does): the environ's
        # credentials. The type and place at ERROR, the bare stack at DEBUG.
        log_failure("chio_app_failed", failure, request_id=evaluation.request_id)
        status, headers, body = self.runtime.render_crash(evaluation)
        start_response(_status_line(status), headers, sys.exc_info())
        return [body]


def _flask_router(app: Any) -> tuple[Any | None, Callable[..., NativeRoute] | None]:
    """The Flask app behind ``app`` (``flask_app.wsgi_app``, maybe wrapped) and its router.

    Imported only then: Werkzeug is not a dependency of the generic WSGI adapter.
    """
    for node in wrapped_apps(app):  # through WSGI wrappers (ProxyFix, ...)
        _refuse_dispatcher(node)
        candidate = getattr(node, "__self__", node)
        adapter_factory = getattr(candidate, "create_url_adapter", None)
        if hasattr(candidate, "url_map") and callable(adapter_factory):
            from .integrations.flask_routing import native_route

            # ``app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {...})``: the mounts'
            # requests never reach this app's URL map either.
            for inner in wrapped_apps(getattr(candidate, "wsgi_app", None)):
                _refuse_dispatcher(inner)
            return candidate, native_route
    return None, None


def _refuse_dispatcher(node: Any) -> None:
    """Refuse Werkzeug's DispatcherMiddleware: its ``.app`` is only the default app, so the
    mounted apps' routes would be resolved on the wrong URL map (outside review)."""
    if isinstance(getattr(node, "mounts", None), dict):
        raise ValueError(
            "ChioWSGIMiddleware cannot route into DispatcherMiddleware's mounts; protect "
            "each mounted app instead (Chio(app) or app.wsgi_app = "
            "ChioWSGIMiddleware(app.wsgi_app, ...))"
        )


class _ClosingIterator:
    """Passes the app's body through; a sink failure at start swaps in the 503 body."""

    def __init__(self, result: Iterable[bytes], state: dict[str, Any]) -> None:
        self._result = result
        self._state = state

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._result:
            replaced = self._state["replaced"]
            if replaced is not None:
                yield replaced
                return
            yield chunk
        if not self._state["started"]:
            raise RuntimeError("the WSGI app returned without calling start_response")

    def close(self) -> None:
        """Close the app's iterable (WSGI requires it)."""
        _close(self._result)


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if callable(close):
        close()


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    413: "Content Too Large",
    428: "Precondition Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _status_line(status: int) -> str:
    return f"{status} {_REASONS.get(status, 'Error')}"


def _headers(environ: dict[str, Any]) -> list[tuple[str, bytes]]:
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key.replace("_", "-").lower()
        else:
            continue
        if isinstance(value, str) and value:
            headers.append((name, value.encode("latin-1")))
    return headers


def _decoded(raw: str) -> str:
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise BadRequest("request path is not valid UTF-8") from None


def _raw_route_path(environ: dict[str, Any]) -> str:
    """The percent-encoded path after the mount prefix, when the server says (RAW_URI)."""
    raw = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "").split("?", 1)[0]
    if raw.lower().startswith(("http://", "https://")):  # absolute-form request target
        scheme_end = raw.index("//") + 2
        slash = raw.find("/", scheme_end)
        raw = raw[slash:] if slash >= 0 else "/"
    script = str(environ.get("SCRIPT_NAME", ""))
    if script and raw.startswith(script):
        raw = raw[len(script) :]
    return raw


def _request_view(environ: dict[str, Any]) -> RequestView:
    """Translate a WSGI environ (path and query decoded as the application sees them).

    The app routes on ``PATH_INFO``; the hashes bind ``SCRIPT_NAME + PATH_INFO``.
    """
    route_path = _decoded(str(environ.get("PATH_INFO", ""))) or "/"
    return RequestView(
        method=str(environ.get("REQUEST_METHOD", "GET")).upper(),
        path=_decoded(str(environ.get("SCRIPT_NAME", ""))) + route_path,
        query=parse_wire_query(str(environ.get("QUERY_STRING", ""))),
        headers=_headers(environ),
        raw_path=_raw_route_path(environ),
        route_path=route_path,
        client=environ.get("REMOTE_ADDR"),
    )


def _fallback_view(environ: dict[str, Any]) -> RequestView:
    """A view of a request too malformed to translate, enough to receipt its refusal."""
    raw = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    return RequestView(
        method=str(environ.get("REQUEST_METHOD", "GET")).upper(),
        path=raw.encode("latin-1", "replace").decode("utf-8", "replace") or "/",
        query={},
        headers=_headers(environ),
    )
