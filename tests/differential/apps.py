"""The applications under test: FastAPI, Starlette, Flask, and plain ASGI and WSGI apps.

Each serves every tool of :data:`.spec.TOOLS` (and the unbound ``GET /health`` and
``GET``/``POST /public/echo``, which reads the query and a JSON body) and reads
its input the way that framework's users do: Starlette ``await request.json()`` and
``request.form()``; FastAPI body models, ``Body()``, ``Form()`` and ``Query()``
parameters; Flask ``get_json(force=True)``, ``get_json()``, ``request.form``,
``request.args`` and ``request.values``; framework converters (``{p:path}``,
``<path:p>``, ``{id:int}``, ``<int:id>``) and Flask's ``strict_slashes=False``. The
plain apps route on the decoded path with the same ``{name}`` templates the middleware
is given and read bodies with :func:`json.loads` (which, like the frameworks, removes a
BOM and detects UTF-16/32). Every handler records into a :class:`.spec.Recorder`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl

import flask
from fastapi import Body, Depends, FastAPI, Form, Query
from fastapi import Request as FastAPIRequest
from flask.views import MethodView
from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from chio_middleware import RouteBinding
from chio_middleware.asgi import ChioMiddleware
from chio_middleware.core.clock import Clock
from chio_middleware.core.replay import MemoryReplayStore
from chio_middleware.integrations import tool as chio_tool
from chio_middleware.integrations.flask import Chio as FlaskChio
from chio_middleware.integrations.starlette import Chio as StarletteChio
from chio_middleware.sinks import MemorySink
from chio_middleware.wsgi import ChioWSGIMiddleware

from .spec import BY_NAME, CASE_HEADER, TOOLS, HandlerCall, Recorder, RecordingGuard, settings

#: The apps told their tools by settings bindings (templates), and the framework apps
#: whose endpoints declare their tools themselves (``@tool``; no settings bindings).
BOUND = ("fastapi", "starlette", "flask", "asgi", "wsgi")
DECLARED = ("fastapi-declared", "starlette-declared", "flask-declared")
FRAMEWORKS = BOUND + DECLARED


def is_asgi(kind: str) -> bool:
    return kind.split("-")[0] in ("fastapi", "starlette", "asgi")


def _marker(declared: bool) -> Callable[[str | None], Callable[[Any], Any]]:
    """``mark(tool_name)``: the endpoint decorator declaring that tool, when ``declared``."""

    def mark(name: str | None) -> Callable[[Any], Any]:
        if not declared or name is None:
            return lambda endpoint: endpoint
        entry = BY_NAME[name]
        return chio_tool(entry.server, entry.name, nonce=entry.require_nonce)

    return mark

OK = {"ok": True}


# -- Starlette -------------------------------------------------------------------------------


def starlette_app(rec: Recorder, declared: bool = False) -> Starlette:
    mark = _marker(declared)

    def begin(request: Request, tool: str | None) -> HandlerCall:
        state = request.scope.get("state") or {}
        entry = rec.call(request.headers.get(CASE_HEADER), tool, state.get("chio_request_id"))
        for name, value in request.path_params.items():
            rec.read(entry, name, value)
        for name, value in request.query_params.multi_items():
            rec.read(entry, name, value)
        return entry

    async def read_json(request: Request, entry: HandlerCall) -> None:
        data = await request.json()
        _read_document(rec, entry, data)

    async def read_form(request: Request, entry: HandlerCall) -> None:
        form = await request.form()
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                content = (await value.read()).decode("utf-8", "replace")
                rec.read(entry, name, {"filename": value.filename, "content": content})
            else:
                rec.read(entry, name, value)

    def handler(tool: str | None, body: str = "") -> Callable[[Request], Any]:
        @mark(tool)
        async def endpoint(request: Request) -> Response:
            entry = begin(request, tool)
            if body == "json":
                await read_json(request, entry)
            elif body == "raw-json":
                _read_document(rec, entry, json.loads(await request.body()))
            elif body == "form":
                await read_form(request, entry)
            elif body == "json-if-any" and await request.body():
                await read_json(request, entry)
            return JSONResponse(OK)

        return endpoint

    class NoteEndpoint(HTTPEndpoint):
        @mark("note_read")
        async def get(self, request: Request) -> Response:
            begin(request, "note_read")
            return JSONResponse(OK)

    # POST is a function route listed first: an HTTPEndpoint route answers every method,
    # and the middleware's start-up coverage lists only its GET.
    return Starlette(
        routes=[
            Route("/cbv/{note_id}", handler("note_write", "json"), methods=["POST"]),
            Route("/cbv/{note_id}", NoteEndpoint),
            Mount(
                "/api",
                routes=[Mount("/v1", routes=[Route("/files/{name}", handler("mounted_get"))])],
            ),
            Route("/health", handler(None), methods=["GET"]),
            Route("/public/echo", handler(None, "json-if-any"), methods=["GET", "POST"]),
            Route("/files/get", handler("file_get"), methods=["GET"]),
            Route("/files/read", handler("file_read", "json"), methods=["POST"]),
            Route("/files/form", handler("file_form", "form"), methods=["POST"]),
            Route("/files/body", handler("file_body", "raw-json"), methods=["POST"]),
            Route("/files/values", handler("file_values", "form"), methods=["POST"]),
            Route("/blobs/{p:path}", handler("blob_get"), methods=["GET"]),
            Route("/items/{id:int}", handler("item_get"), methods=["GET"]),
            Route("/reports/", handler("report_list"), methods=["GET"]),
            Route("/notes/{note_id}", handler("delete_note"), methods=["DELETE"]),
            Route("/admin/purge", handler("purge", "json"), methods=["POST"]),
        ]
    )


def _read_document(rec: Recorder, entry: HandlerCall, data: Any) -> None:
    """The members of a JSON object body; any other JSON value is read whole."""
    if isinstance(data, dict):
        for name, value in data.items():
            rec.read(entry, name, value)
    else:
        rec.read(entry, "<body>", data)


# -- FastAPI ---------------------------------------------------------------------------------


class FileItem(BaseModel):
    model_config = ConfigDict(extra="allow")
    path: str


def fastapi_app(rec: Recorder, declared: bool = False) -> FastAPI:
    app = FastAPI()
    mark = _marker(declared)

    def begin(request: FastAPIRequest, tool: str | None, **read: Any) -> HandlerCall:
        state = request.scope.get("state") or {}
        entry = rec.call(request.headers.get(CASE_HEADER), tool, state.get("chio_request_id"))
        for name, value in read.items():
            if value is not None:
                rec.read(entry, name, value)
        return entry

    @app.get("/health")
    async def health(request: FastAPIRequest) -> Any:
        begin(request, None)
        return OK

    @app.api_route("/public/echo", methods=["GET", "POST"])
    async def echo(request: FastAPIRequest) -> Any:
        entry = begin(request, None, **dict(request.query_params))
        if await request.body():
            _read_document(rec, entry, await request.json())
        return OK

    @app.get("/files/get")
    @mark("file_get")
    async def file_get(
        request: FastAPIRequest, path: str | None = Query(None), ref: str | None = Query(None)
    ) -> Any:
        begin(request, "file_get", path=path, ref=ref)
        return OK

    @app.post("/files/read")
    @mark("file_read")
    async def file_read(
        request: FastAPIRequest, item: FileItem, ref: str | None = Query(None)
    ) -> Any:
        entry = begin(request, "file_read", ref=ref, path=item.path)
        for name, value in (item.model_extra or {}).items():
            rec.read(entry, name, value)
        return OK

    @app.post("/files/form")
    @mark("file_form")
    async def file_form(
        request: FastAPIRequest, path: str = Form(), ref: str | None = Query(None)
    ) -> Any:
        begin(request, "file_form", ref=ref, path=path)
        return OK

    @app.post("/files/body")
    @mark("file_body")
    async def file_body(
        request: FastAPIRequest,
        path: str = Body(),
        note: str | None = Body(None),
        ref: str | None = Query(None),
    ) -> Any:
        begin(request, "file_body", ref=ref, path=path, note=note)
        return OK

    @app.post("/files/values")
    @mark("file_values")
    async def file_values(
        request: FastAPIRequest, path: str = Body(embed=True), ref: str | None = Query(None)
    ) -> Any:
        begin(request, "file_values", ref=ref, path=path)
        return OK

    @app.get("/blobs/{p:path}")
    @mark("blob_get")
    async def blob_get(request: FastAPIRequest, p: str) -> Any:
        begin(request, "blob_get", p=p)
        return OK

    @app.get("/items/{id:int}")  # Starlette's int convertor, as the binding says
    @mark("item_get")
    async def item_get(request: FastAPIRequest, id: int) -> Any:
        begin(request, "item_get", id=id)
        return OK

    @app.get("/reports/")
    @mark("report_list")
    async def report_list(request: FastAPIRequest, ref: str | None = Query(None)) -> Any:
        begin(request, "report_list", ref=ref)
        return OK

    @app.delete("/notes/{note_id}")
    @mark("delete_note")
    async def delete_note(request: FastAPIRequest, note_id: str) -> Any:
        begin(request, "delete_note", note_id=note_id)
        return OK

    @app.post("/admin/purge")
    @mark("purge")
    async def purge(request: FastAPIRequest) -> Any:
        begin(request, "purge")
        return OK

    def declares(name: str) -> list[Any]:
        """``dependencies=[Depends(tool(...))]``: FastAPI's route-level declaration."""
        if not declared:
            return []
        entry = BY_NAME[name]
        return [Depends(chio_tool(entry.server, entry.name, nonce=entry.require_nonce))]

    @app.get("/cbv/{note_id}", dependencies=declares("note_read"))
    async def note_read(request: FastAPIRequest, note_id: str) -> Any:
        begin(request, "note_read", note_id=note_id)
        return OK

    # On the app itself: routes of an included APIRouter are not seen by the middleware
    # yet (FastAPI's _IncludedRouter; see the differential failures note).
    @app.get("/api/v1/files/{name}")
    @mark("mounted_get")
    async def mounted_get(request: FastAPIRequest, name: str) -> Any:
        begin(request, "mounted_get", name=name)
        return OK

    @app.post("/cbv/{note_id}", dependencies=declares("note_write"))
    async def note_write(request: FastAPIRequest, note_id: str, item: FileItem) -> Any:
        entry = begin(request, "note_write", note_id=note_id, path=item.path)
        for name, value in (item.model_extra or {}).items():
            rec.read(entry, name, value)
        return OK

    return app


def typed_fastapi_app(rec: Recorder) -> FastAPI:
    """The idiomatic FastAPI route with typed parameters: a str segment, the type on the
    parameter (``/typed/{id}`` with ``id: int``), as the ``item_get`` tool."""
    app = FastAPI()

    @app.get("/typed/{id}")
    async def typed(
        request: FastAPIRequest, id: int, limit: int = Query(0), flag: bool = Query(False)
    ) -> Any:
        state = request.scope.get("state") or {}
        case = request.headers.get(CASE_HEADER)
        entry = rec.call(case, "item_get", state.get("chio_request_id"))
        rec.read(entry, "id", id)
        if "limit" in request.query_params:
            rec.read(entry, "limit", limit)
        if "flag" in request.query_params:
            rec.read(entry, "flag", flag)
        return OK

    return app


# -- Flask -----------------------------------------------------------------------------------


def flask_app(rec: Recorder, declared: bool = False) -> flask.Flask:
    app = flask.Flask("differential")
    mark = _marker(declared)

    def begin(tool: str | None, **params: Any) -> HandlerCall:
        request = flask.request
        entry = rec.call(
            request.headers.get(CASE_HEADER), tool, request.environ.get("chio.request_id")
        )
        for name, value in params.items():
            rec.read(entry, name, value)
        return entry

    def read_args(entry: HandlerCall) -> None:
        for name, value in flask.request.args.items(multi=True):
            rec.read(entry, name, value)

    def read_files(entry: HandlerCall) -> None:
        for name, upload in flask.request.files.items(multi=True):
            content = upload.read().decode("utf-8", "replace")
            rec.read(entry, name, {"filename": upload.filename, "content": content})

    @app.get("/health")
    def health() -> Any:
        begin(None)
        return OK

    @app.route("/public/echo", methods=["GET", "POST"])
    def echo() -> Any:
        entry = begin(None)
        read_args(entry)
        if flask.request.get_data():
            _read_document(rec, entry, flask.request.get_json(force=True))
        return OK

    @app.get("/files/get")
    @mark("file_get")
    def file_get() -> Any:
        read_args(begin("file_get"))
        return OK

    @app.post("/files/read")
    @mark("file_read")
    def file_read() -> Any:
        entry = begin("file_read")
        read_args(entry)
        _read_document(rec, entry, flask.request.get_json(force=True))
        return OK

    @app.post("/files/form")
    @mark("file_form")
    def file_form() -> Any:
        entry = begin("file_form")
        read_args(entry)
        for name, value in flask.request.form.items(multi=True):
            rec.read(entry, name, value)
        read_files(entry)
        return OK

    @app.post("/files/body")
    @mark("file_body")
    def file_body() -> Any:
        entry = begin("file_body")
        read_args(entry)
        data = flask.request.get_json(silent=True)
        if data is not None:
            _read_document(rec, entry, data)
        return OK

    @app.post("/files/values")
    @mark("file_values")
    def file_values() -> Any:
        entry = begin("file_values")
        for name, value in flask.request.values.items(multi=True):
            rec.read(entry, name, value)
        read_files(entry)
        return OK

    @app.get("/blobs/<path:p>")
    @mark("blob_get")
    def blob_get(p: str) -> Any:
        read_args(begin("blob_get", p=p))
        return OK

    @app.get("/items/<int:id>")
    @mark("item_get")
    def item_get(id: int) -> Any:
        read_args(begin("item_get", id=id))
        return OK

    @app.get("/reports/", strict_slashes=False)
    @mark("report_list")
    def report_list() -> Any:
        read_args(begin("report_list"))
        return OK

    @app.delete("/notes/<note_id>")
    @mark("delete_note")
    def delete_note(note_id: str) -> Any:
        read_args(begin("delete_note", note_id=note_id))
        return OK

    @app.post("/admin/purge")
    @mark("purge")
    def purge() -> Any:
        read_args(begin("purge"))
        return OK

    class NoteView(MethodView):
        @mark("note_read")
        def get(self, note_id: str) -> Any:
            read_args(begin("note_read", note_id=note_id))
            return OK

        @mark("note_write")
        def post(self, note_id: str) -> Any:
            entry = begin("note_write", note_id=note_id)
            read_args(entry)
            _read_document(rec, entry, flask.request.get_json(force=True))
            return OK

    app.add_url_rule("/cbv/<note_id>", view_func=NoteView.as_view("note_view"))

    files = flask.Blueprint("files", "differential", url_prefix="/api/v1")

    @files.get("/files/<name>")
    @mark("mounted_get")
    def mounted_get(name: str) -> Any:
        read_args(begin("mounted_get", name=name))
        return OK

    app.register_blueprint(files)

    return app


# -- plain ASGI and WSGI ---------------------------------------------------------------------

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(str|path|int))?\}")
_PLAIN_CONVERTERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "str": ("[^/]+", str),
    "path": (".*", str),
    "int": ("[0-9]+", int),
}
_FORM_TOOLS = frozenset({"file_form", "file_values"})
_JSON_TOOLS = frozenset({"file_read", "file_body", "purge", "note_write"})


def _template_route(template: str) -> tuple[re.Pattern[str], dict[str, Callable[[str], Any]]]:
    """A template as the plain apps route it: ``{name}``, ``{name:path}``, ``{name:int}``."""
    parts, converters = [], {}
    for segment in template.split("/"):
        match = _PARAM.fullmatch(segment)
        if match is None:
            parts.append(re.escape(segment))
            continue
        regex, convert = _PLAIN_CONVERTERS[match.group(2) or "str"]
        parts.append(f"(?P<{match.group(1)}>{regex})")
        converters[match.group(1)] = convert
    return re.compile("/".join(parts)), converters


_PLAIN_ROUTES = [(t.method, *_template_route(t.template), t.name) for t in TOOLS]


def _plain_route(method: str, path: str) -> tuple[str | None, dict[str, Any]] | None:
    if (method == "GET" and path == "/health") or (
        method in ("GET", "POST") and path == "/public/echo"
    ):
        return None, {}
    for bound_method, regex, converters, name in _PLAIN_ROUTES:
        found = regex.fullmatch(path)
        if found and bound_method == method:
            return name, {k: converters[k](v) for k, v in found.groupdict().items()}
    return None


def _plain_reads(
    rec: Recorder,
    entry: HandlerCall,
    params: dict[str, Any],
    query: str,
    body: bytes,
    content_type: str,
) -> None:
    """Path parameters, the query, and the body: JSON whatever its type (as Starlette's
    ``request.json()``), a form where the Content-Type says so (as every framework)."""
    for name, value in params.items():
        rec.read(entry, name, value)
    for name, value in parse_qsl(query, keep_blank_values=True):
        rec.read(entry, name, value)
    media = content_type.split(";", 1)[0].strip().lower()
    if entry.tool in _FORM_TOOLS and media == "application/x-www-form-urlencoded":
        for name, value in parse_qsl(body.decode("latin-1"), keep_blank_values=True):
            rec.read(entry, name, value)
    elif (entry.tool in _JSON_TOOLS or entry.tool is None) and body:
        _read_document(rec, entry, json.loads(body))


def plain_asgi_app(rec: Recorder) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        found = _plain_route(scope["method"], scope["path"])
        status, payload = 404, b'{"detail":"not found"}'
        if found is not None:
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            headers = dict(scope["headers"])
            case = headers.get(CASE_HEADER.encode())
            entry = rec.call(
                case.decode("latin-1") if case is not None else None,
                found[0],
                (scope.get("state") or {}).get("chio_request_id"),
            )
            query = scope.get("query_string", b"").decode("latin-1")
            content_type = headers.get(b"content-type", b"").decode("latin-1")
            try:
                _plain_reads(rec, entry, found[1], query, body, content_type)
                status, payload = 200, json.dumps(OK).encode()
            except ValueError:
                status, payload = 400, b'{"detail":"bad body"}'
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


def plain_wsgi_app(rec: Recorder) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
        found = _plain_route(environ["REQUEST_METHOD"], path)
        status, payload = "404 Not Found", b'{"detail":"not found"}'
        if found is not None:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            entry = rec.call(
                environ.get("HTTP_" + CASE_HEADER.upper().replace("-", "_")),
                found[0],
                environ.get("chio.request_id"),
            )
            query = environ.get("QUERY_STRING", "")
            content_type = environ.get("CONTENT_TYPE", "")
            try:
                _plain_reads(rec, entry, found[1], query, body, content_type)
                status, payload = "200 OK", json.dumps(OK).encode()
            except ValueError:
                status, payload = "400 Bad Request", b'{"detail":"bad body"}'
        start_response(status, [("Content-Type", "application/json")])
        return [payload]

    return app


# -- protected -------------------------------------------------------------------------------


def bare_app(kind: str, rec: Recorder) -> Any:
    """The application of ``kind`` (one of :data:`FRAMEWORKS`), unprotected."""
    base, _, variant = kind.partition("-")
    declared = variant == "declared"
    if base == "fastapi":
        return fastapi_app(rec, declared)
    if base == "starlette":
        return starlette_app(rec, declared)
    if base == "flask":
        return flask_app(rec, declared)
    if kind == "asgi":
        return plain_asgi_app(rec)
    if kind == "wsgi":
        return plain_wsgi_app(rec)
    raise ValueError(kind)


def protected(
    kind: str,
    rec: Recorder,
    *,
    routes: Sequence[RouteBinding] | None = None,
    clock: Clock | None = None,
    inner: Callable[[Any], Any] | None = None,
    app: Any = None,
    **overrides: Any,
) -> Any:
    """The app of ``kind`` (or ``app``, an app of that kind) behind the middleware.

    The recording guard is installed. ``inner`` wraps the app inside the middleware (the
    sanity tests use it to tamper). Returns an ASGI app, or a WSGI callable (for Flask,
    ``app.wsgi_app`` is replaced). The settings-bound apps get the bare adapters
    (``ChioMiddleware(app)``, ``ChioWSGIMiddleware(app.wsgi_app)``); the declared ones the
    framework integrations (``Chio(app, ...)``), as the README shows.
    """
    app = bare_app(kind, rec) if app is None else app
    if routes is None and kind in DECLARED:
        routes = []  # the endpoints declare their tools
    options: dict[str, Any] = {
        "settings": settings(routes, **overrides),
        "guards": [RecordingGuard(rec)],
        "store": MemoryReplayStore(),
        "sink": MemorySink(),
    }
    if clock is not None:
        options["clock"] = clock
    if kind in DECLARED and inner is None:
        integration = FlaskChio if kind.startswith("flask") else StarletteChio
        integration(app, **options)
        return app
    if kind.startswith("flask"):
        wsgi = app.wsgi_app if inner is None else inner(app.wsgi_app)
        app.wsgi_app = ChioWSGIMiddleware(wsgi, **options)
        return app
    target = app if inner is None else inner(app)
    if is_asgi(kind):
        return ChioMiddleware(target, **options)
    return ChioWSGIMiddleware(target, **options)
