"""Outside review (2026-12-01): each test is one attack that the middleware now refuses.

Every test asserts the product's rule (PROTOCOL.md 5.1-5.3): the route and arguments the
middleware checks are the route dispatched and the arguments the handler reads, or the
request is refused. Handlers record what they read in ``ran``.
"""

from __future__ import annotations

from typing import Annotated, Any

import flask
import pytest
from fastapi import Cookie, FastAPI, Header, Query
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from chio_middleware.core.clock import FixedClock
from chio_middleware.integrations import tool
from chio_middleware.integrations.fastapi import Chio as FastAPIChio
from chio_middleware.integrations.flask import Chio as FlaskChio
from chio_middleware.integrations.starlette import Chio as StarletteChio

from ..middleware.harness import NOW, agent_headers, capability, settings

ran: list[tuple[str, Any]] = []

#: The attacker's legitimate, narrow capability: one tool, paths under /workspace/ only.
NARROW = [
    {
        "server_id": "srv-files",
        "tool_name": "read_file",
        "operations": ["invoke"],
        "constraints": [{"type": "path_prefix", "value": "/workspace/"}],
    }
]


def _client(app: Any) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


# -- F1: FastAPI Header()/Cookie() parameters are arguments no constraint sees ---------------


def _fastapi_header_app() -> FastAPI:
    app = FastAPI()

    @app.get("/files/read")
    @tool("srv-files", "read_file")
    async def read_file(
        path: Annotated[str, Query()],
        x_target: Annotated[str | None, Header()] = None,
        target: Annotated[str | None, Cookie()] = None,
    ) -> dict[str, Any]:
        # The handler acts on the header / cookie when present (a common "override" idiom).
        ran.append(("read_file", x_target or target or path))
        return {"ok": True}

    FastAPIChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    return app


def test_f1_fastapi_header_parameter_is_not_checked() -> None:
    ran.clear()
    url = "/files/read?path=/workspace/notes.txt"
    headers = agent_headers("GET", url, cap=capability(NARROW), tool=("srv-files", "read_file"))
    headers["x-target"] = "/etc/shadow"
    with _client(_fastapi_header_app()) as client:
        response = client.get(url, headers=headers)
    # Either refused, or the handler read only what path_prefix saw.
    assert response.status_code >= 400 or ran == [("read_file", "/workspace/notes.txt")], (
        response.status_code,
        ran,
    )


def test_f1_fastapi_cookie_parameter_is_not_checked() -> None:
    ran.clear()
    url = "/files/read?path=/workspace/notes.txt"
    headers = agent_headers("GET", url, cap=capability(NARROW), tool=("srv-files", "read_file"))
    headers["cookie"] = "target=/etc/shadow"
    with _client(_fastapi_header_app()) as client:
        response = client.get(url, headers=headers)
    assert response.status_code >= 400 or ran == [("read_file", "/workspace/notes.txt")], (
        response.status_code,
        ran,
    )


# -- F2: a sub-app behind a Mount wrapped in an ASGI middleware is "opaque" = unbound --------


def _mounted_wrapped_app() -> Starlette:
    @tool("srv-files", "read_file")
    async def read_file(request: Request) -> JSONResponse:
        ran.append(("read_file", request.query_params.get("path")))
        return JSONResponse({"ok": True})

    @tool("srv-files", "purge", nonce=True)
    async def purge(request: Request) -> JSONResponse:
        ran.append(("purge", None))
        return JSONResponse({"ok": True})

    inner = Starlette(
        routes=[
            Route("/read", read_file, methods=["GET"]),
            Route("/purge", purge, methods=["POST"]),
        ]
    )
    # GZipMiddleware (or CORS, a session middleware, ...) around a mounted sub-app.
    app = Starlette(routes=[Mount("/v1", app=GZipMiddleware(inner))])
    StarletteChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    return app


def test_f2_declared_tool_behind_wrapped_mount_needs_no_capability() -> None:
    ran.clear()
    with _client(_mounted_wrapped_app()) as client:
        response = client.get("/v1/read?path=/etc/shadow")  # no credential at all
    assert response.status_code >= 400 or ran == [], (response.status_code, ran)


def test_f2_nonce_tool_behind_wrapped_mount_runs_without_nonce() -> None:
    ran.clear()
    wildcard = [{"server_id": "*", "tool_name": "*", "operations": ["invoke"]}]
    url = "/v1/purge"
    headers = agent_headers(
        "POST",
        url,
        cap=capability(wildcard),
        tool=("chio_http_authority", "authorize_http_request"),
    )
    with _client(_mounted_wrapped_app()) as client:
        response = client.post(url, headers=headers)
    # purge is declared nonce=True: without a nonce it must get 428 (or another refusal).
    assert response.status_code >= 400 or ran == [], (response.status_code, ran)


# -- F3: a middleware inside Chio's place in the stack rewrites what the router sees ---------


class MethodOverride:
    """The common ``X-HTTP-Method-Override`` middleware (as in many Starlette recipes)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for name, value in scope["headers"]:
                if name == b"x-http-method-override":
                    scope = {**scope, "method": value.decode("latin-1").upper()}
        await self.app(scope, receive, send)




def _override_inside_app_fixed_order() -> Starlette:
    @tool("srv-notes", "write_note")
    async def write(request: Request) -> JSONResponse:
        ran.append(("write_note", None))
        return JSONResponse({"ok": True})

    @tool("srv-notes", "delete_note", nonce=True)
    async def delete(request: Request) -> JSONResponse:
        ran.append(("delete_note", None))
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/notes/{note_id}", write, methods=["POST"]),
            Route("/notes/{note_id}", delete, methods=["DELETE"]),
        ]
    )
    app.add_middleware(MethodOverride)  # type: ignore[arg-type]  # registered first: inner
    StarletteChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))  # outer
    return app


# -- F4: Flask, the same override as a WSGI middleware registered before Chio(app) -----------


class WSGIMethodOverride:
    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        override = environ.get("HTTP_X_HTTP_METHOD_OVERRIDE")
        if override and environ["REQUEST_METHOD"] == "POST":
            environ["REQUEST_METHOD"] = override.upper()
        return self.app(environ, start_response)


def test_f4_flask_method_override_inside_chio() -> None:
    ran.clear()
    app = flask.Flask(__name__)

    @app.post("/notes/<note_id>")
    @tool("srv-notes", "write_note")
    def write(note_id: str) -> Any:
        ran.append(("write_note", note_id))
        return {"ok": True}

    @app.delete("/notes/<note_id>")
    @tool("srv-notes", "delete_note", nonce=True)
    def delete(note_id: str) -> Any:
        ran.append(("delete_note", note_id))
        return {"ok": True}

    app.wsgi_app = WSGIMethodOverride(app.wsgi_app)  # type: ignore[method-assign]
    FlaskChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    # A wildcard capability (it matches the synthetic tool of unbound routes), no nonce.
    grants = [{"server_id": "*", "tool_name": "*", "operations": ["invoke"]}]
    url = "/notes/7"
    headers = agent_headers(
        "POST", url, cap=capability(grants), tool=("chio_http_authority", "authorize_http_request")
    )
    headers["x-http-method-override"] = "DELETE"
    response = app.test_client().post(url, headers=headers)
    assert ("delete_note", "7") not in ran, (response.status_code, ran)


# -- F5: Flask app.wsgi_app wrapped (ProxyFix, as Flask's deployment docs say) before Chio ---


def test_f5_flask_declarations_ignored_behind_proxyfix() -> None:
    from werkzeug.middleware.proxy_fix import ProxyFix

    ran.clear()
    app = flask.Flask(__name__)

    @app.get("/files/read")
    @tool("srv-files", "read_file")
    def read() -> Any:
        ran.append(("read_file", flask.request.args.get("path")))
        return {"ok": True}

    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]
    # Even under unbound_routes="refuse", start-up accepts this and the route is unbound.
    FlaskChio(app, settings=settings(routes=[], unbound_routes="refuse"), clock=FixedClock(NOW))
    response = app.test_client().get("/files/read?path=/etc/shadow")  # no credential
    assert response.status_code >= 400 or ran == [], (response.status_code, ran)


# -- F6: one @tool on a multi-method Flask view covers every method, DELETE included --------




# -- F7: FastAPI typed values the rewrite check skips (list[int] query, typed body) --------


class Order(BaseModel):
    confirm: bool


def _typed_app() -> FastAPI:
    app = FastAPI()

    @app.get("/typed")
    @tool("srv", "typed")
    async def typed(ids: Annotated[list[int], Query()]) -> dict[str, Any]:
        ran.append(("typed", ids))
        return {"ok": True}

    @app.post("/order")
    @tool("srv", "order")
    async def order(body: Order) -> dict[str, Any]:
        ran.append(("order", body.confirm))
        return {"ok": True}

    FastAPIChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    return app






# -- F8: an unbound request's path parameters are not arguments (guards/constraints miss them)


def test_f8_unbound_route_path_parameter_is_not_checked() -> None:
    ran.clear()

    async def write(request: Request) -> JSONResponse:  # not declared: unbound
        ran.append(("write", request.path_params["p"]))
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/files/{p:path}", write, methods=["POST"])])
    StarletteChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    # The issuer's wildcard grant (it matches the synthetic chio_http_authority tool),
    # restricted to /workspace/ paths.
    grants = [
        {
            "server_id": "*",
            "tool_name": "*",
            "operations": ["invoke"],
            "constraints": [{"type": "path_prefix", "value": "/workspace/"}],
        }
    ]
    url = "/files/etc/passwd?dest=/workspace/out"
    headers = agent_headers(
        "POST", url, cap=capability(grants), tool=("chio_http_authority", "authorize_http_request")
    )
    with _client(app) as client:
        response = client.post(url, headers=headers)
    assert response.status_code >= 400 or ran == [], (response.status_code, ran)


# -- F9: ChioMiddleware wrapping the app through another ASGI wrapper loses the router ------


def test_f9_asgi_declarations_ignored_behind_a_wrapper() -> None:
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    ran.clear()
    app = FastAPI()

    @app.get("/files/read")
    @tool("srv-files", "read_file")
    async def read_file(path: str) -> dict[str, Any]:
        ran.append(("read_file", path))
        return {"ok": True}

    from chio_middleware.asgi import ChioMiddleware

    wrapped = ChioMiddleware(
        ProxyHeadersMiddleware(app, trusted_hosts="127.0.0.1"),  # type: ignore[arg-type]
        settings=settings(routes=[], unbound_routes="refuse"),
        clock=FixedClock(NOW),
    )
    # The router behind the wrapper is found: under refuse, start-up fails (FastAPI's own
    # docs routes are unbound), and without refuse the declared tool needs its capability.
    with pytest.raises(RuntimeError, match="unbound_routes=refuse"), _client(wrapped):
        pass
    plain = ChioMiddleware(
        ProxyHeadersMiddleware(app, trusted_hosts="127.0.0.1"),  # type: ignore[arg-type]
        settings=settings(routes=[]),
        clock=FixedClock(NOW),
    )
    with _client(plain) as client:
        response = client.get("/files/read?path=/etc/shadow")  # no credential
    assert response.status_code == 401 and ran == [], (response.status_code, ran)


def test_f2_mount_with_its_own_middleware_is_opaque() -> None:
    """Starlette's own ``Mount(..., middleware=[...])`` hides the mounted routes the same way."""
    from starlette.middleware import Middleware

    ran.clear()

    @tool("srv-files", "read_file")
    async def read_file(request: Request) -> JSONResponse:
        ran.append(("read_file", request.query_params.get("path")))
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Mount(
                "/v1",
                routes=[Route("/read", read_file)],
                middleware=[Middleware(GZipMiddleware)],
            )
        ]
    )
    StarletteChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    with _client(app) as client:
        response = client.get("/v1/read?path=/etc/shadow")  # no credential
    assert response.status_code >= 400 or ran == [], (response.status_code, ran)


# -- F11: FastAPI include_router (0.165 keeps it as one _IncludedRouter route) -------------


def test_f11_fastapi_included_router_declarations_ignored_even_under_refuse() -> None:
    from fastapi import APIRouter

    ran.clear()
    app = FastAPI()
    router = APIRouter(prefix="/api")

    @router.get("/files/read")
    @tool("srv-files", "read_file")
    async def read_file(path: str) -> dict[str, Any]:
        ran.append(("read_file", path))
        return {"ok": True}

    app.include_router(router)
    # The docs routes declared public so that "refuse" can only be about the router's route.
    FastAPIChio(
        app,
        settings=settings(
            routes=[],
            unbound_routes="refuse",
            public_paths=["/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"],
        ),
        clock=FixedClock(NOW),
    )
    try:
        with _client(app) as client:
            response = client.get("/api/files/read?path=/etc/shadow")  # no credential
    except Exception:  # start-up refused: acceptable (fails closed)
        return
    assert response.status_code >= 400 or ran == [], (response.status_code, ran)


# -- F12: unbound_routes="refuse" is only checked in the ASGI lifespan ---------------------


def test_f12_refuse_not_enforced_without_lifespan() -> None:
    ran.clear()

    async def purge(request: Request) -> JSONResponse:  # forgotten: no @tool
        ran.append(("purge", None))
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/admin/purge", purge, methods=["GET"])])
    StarletteChio(app, settings=settings(routes=[], unbound_routes="refuse"), clock=FixedClock(NOW))
    # As under `uvicorn --lifespan off` (or any server that skips lifespan): no start-up.
    client = _client(app)
    response = client.get("/admin/purge")
    assert response.status_code >= 500 or ran == [], (response.status_code, ran)


# -- F13: the reserved /chio/tools/{server}/{tool} path overrides the framework's route -----


def test_f13_reserved_path_names_a_tool_the_dispatched_route_is_not() -> None:
    ran.clear()

    @tool("srv-admin", "proxy", nonce=True)
    async def catch_all(request: Request) -> JSONResponse:
        ran.append(("proxy", request.path_params["p"]))
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/{p:path}", catch_all, methods=["POST"])])
    StarletteChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    url = "/chio/tools/srv-files/read_file"
    body = b'{"path": "/workspace/a"}'
    headers = agent_headers(
        "POST", url, body, cap=capability(NARROW), tool=("srv-files", "read_file")
    )
    with _client(app) as client:
        response = client.post(url, content=body, headers=headers)
    # The router dispatches to srv-admin/proxy (nonce required, not granted).
    assert response.status_code >= 400 or ran == [], (response.status_code, ran)


# -- F14: public_paths open every method of the path --------------------------------------


def test_f14_public_path_opens_side_effect_methods() -> None:
    from chio_middleware.asgi import ChioMiddleware

    ran.clear()

    async def app(scope: Any, receive: Any, send: Any) -> None:  # a plain ASGI app
        if scope["type"] != "http":
            return
        ran.append((scope["method"], scope["path"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = ChioMiddleware(
        app, settings=settings(routes=[], public_paths=["/health"]), clock=FixedClock(NOW)
    )
    response = _client(wrapped).post("/health")  # no credential, a side-effect method
    # Unbound POST needs a capability (PROTOCOL 5.3); "public" is documented for reads?
    assert response.status_code >= 400 or ran == [], (response.status_code, ran)


# -- F15: with structlog's default dev renderer and rich, a guard failure logs locals -------


def test_f15_structlog_rich_traceback_shows_credential_locals(
    capsys: Any,
) -> None:
    import structlog

    class Broken:
        name = "BrokenGuard"
        reads_arguments = False

        def check(self, context: Any) -> None:
            raise RuntimeError("backend down")

    app = FastAPI()

    @app.get("/files/read")
    @tool("srv-files", "read_file")
    async def read_file(path: str) -> dict[str, Any]:
        return {"ok": True}

    FastAPIChio(app, settings=settings(routes=[]), clock=FixedClock(NOW), guards=[Broken()])
    cap = capability(NARROW)
    url = "/files/read?path=/workspace/a"
    headers = agent_headers("GET", url, cap=cap, tool=("srv-files", "read_file"))
    # What an app does with one line: structlog's defaults (ConsoleRenderer, rich tracebacks
    # with show_locals=True when rich is installed).
    structlog.configure()
    try:
        with _client(app) as client:
            response = client.get(url, headers=headers)
    finally:
        structlog.reset_defaults()
    out = capsys.readouterr()
    text = out.out + out.err
    assert response.status_code == 503
    secret_parts = [headers["x-chio-capability"][:40], headers["x-chio-dpop"][:40]]
    secret_parts.append(cap.to_wire()["signature"][:32])
    assert not [p for p in secret_parts if p in text], text[-3000:]
