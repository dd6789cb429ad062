"""Outside review (2026-12-01, second): what runs between the Chio check and the router.

The review found the router dispatching a route nobody checked when something between
the middleware and the router rewrote the request: ProxyFix's ``X-Forwarded-Host`` under
Flask's ``host_matching`` and Starlette's ``Host`` routes, and FastAPI's own ``root_path``
for an app wrapped from outside. A hook at the router's entry now compares the request
with the one checked and refuses (503) a changed one; the view never runs.

Each rewriter below changes one input that decides the route or the arguments; each runs
between Chio and the router in every way an app can be put together (ASGI: the app
wrapped from outside, ``Chio(app)`` with an inner middleware; Flask: ``app.wsgi_app``
wrapped before ``init_app``). A rewriter that changes nothing the router reads passes.
"""

from collections.abc import Callable
from typing import Any

import flask
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Host, Route, Router
from starlette.testclient import TestClient
from werkzeug.middleware.proxy_fix import ProxyFix

from chio_middleware.asgi import ChioMiddleware
from chio_middleware.core.clock import FixedClock
from chio_middleware.integrations import public, tool
from chio_middleware.integrations.fastapi import Chio as FastAPIChio
from chio_middleware.integrations.flask import Chio as FlaskChio
from chio_middleware.integrations.starlette import Chio as StarletteChio

from ..middleware.harness import NOW, agent_headers, capability, settings

ran: list[str] = []

# -- ASGI rewriters: each changes one input of the scope -------------------------------------


def _asgi_rewriter(change: Callable[[dict[str, Any]], None]) -> type:
    class Rewriter:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                scope = dict(scope)
                change(scope)
            await self.app(scope, receive, send)

    return Rewriter


def _set_header(name: bytes, value: bytes) -> Callable[[dict[str, Any]], None]:
    def change(scope: dict[str, Any]) -> None:
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k != name] + [(name, value)]

    return change


def _header_in_place(scope: dict[str, Any]) -> None:  # as MutableHeaders does
    scope["headers"].append((b"cookie", b"target=/etc/shadow"))


ASGI_REWRITERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "method": lambda scope: scope.update(method="DELETE"),
    "path": lambda scope: scope.update(path="/admin/notes"),
    "root_path": lambda scope: scope.update(root_path="/public"),
    "query_string": lambda scope: scope.update(query_string=b"path=/etc/shadow"),
    "host header": _set_header(b"host", b"admin.example.com"),
    "header in place": _header_in_place,
}


def _noop(scope: dict[str, Any]) -> None:
    scope.setdefault("state", {})["seen"] = True  # what session/auth middleware add
    scope["headers"] = [*scope["headers"], (b"x-request-id", b"42")]  # a request-id one


async def _public_notes(request: Request) -> JSONResponse:
    ran.append("public_notes")
    return JSONResponse({"ok": True})


@tool("srv-notes", "read_note")
async def _read(request: Request) -> JSONResponse:
    ran.append("read_note")
    return JSONResponse({"ok": True})


@tool("srv-admin", "purge", nonce=True)
async def _purge(request: Request) -> JSONResponse:
    ran.append("purge")
    return JSONResponse({"ok": True})


@tool("srv-admin", "read_admin")
async def _admin(request: Request) -> JSONResponse:
    ran.append("admin")
    return JSONResponse({"ok": True})


def _routes() -> list[Any]:
    return [
        Host("admin.example.com", app=Router(routes=[Route("/notes", _admin)])),
        Route("/notes", public(_public_notes), methods=["GET"]),
        Route("/notes", _purge, methods=["DELETE"]),
        Route("/admin/notes", _admin),
        Route("/public/notes", _admin),
    ]


def _outer_starlette(rewriter: type) -> Any:
    return ChioMiddleware(
        Starlette(routes=_routes(), middleware=[Middleware(rewriter)]),
        settings=settings(routes=[]),
        clock=FixedClock(NOW),
    )


def _inner_starlette(rewriter: type) -> Any:
    app = Starlette(routes=_routes())
    app.add_middleware(rewriter)  # added first: inside the Chio middleware added next
    StarletteChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    return app


def _outer_fastapi(rewriter: type) -> Any:
    app = FastAPI()
    app.router.routes.extend(_routes())
    app.add_middleware(rewriter)
    return ChioMiddleware(app, settings=settings(routes=[]), clock=FixedClock(NOW))


def _inner_fastapi(rewriter: type) -> Any:
    app = FastAPI()
    app.router.routes.extend(_routes())
    app.add_middleware(rewriter)
    FastAPIChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    return app


def _router_middleware(rewriter: type) -> Any:
    """A rewriter in the router's own middleware (``Router(middleware=...)``)."""
    app = Starlette()
    app.router = Router(routes=_routes(), middleware=[Middleware(rewriter)])
    return ChioMiddleware(app, settings=settings(routes=[]), clock=FixedClock(NOW))


ASGI_APPS = {
    "Starlette wrapped": _outer_starlette,
    "Starlette, Chio(app)": _inner_starlette,
    "FastAPI wrapped": _outer_fastapi,
    "FastAPI, Chio(app)": _inner_fastapi,
    "router middleware": _router_middleware,
}


@pytest.mark.parametrize("build", sorted(ASGI_APPS))
@pytest.mark.parametrize("changed", sorted(ASGI_REWRITERS))
def test_an_asgi_request_changed_after_the_check_is_refused(build: str, changed: str) -> None:
    ran.clear()
    app = ASGI_APPS[build](_asgi_rewriter(ASGI_REWRITERS[changed]))
    client = TestClient(app, raise_server_exceptions=False)
    response = client.get("/notes", headers={"host": "www.example.com"})  # public: no credential
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.json()["error"] == "chio_unavailable"
    named = {"host header": "headers", "header in place": "headers"}.get(changed, changed)
    assert f"request's {named}" in response.json()["message"]
    assert ran == []


@pytest.mark.parametrize("build", sorted(ASGI_APPS))
def test_an_asgi_rewriter_that_changes_nothing_routed_passes(build: str) -> None:
    ran.clear()
    client = TestClient(ASGI_APPS[build](_asgi_rewriter(_noop)), raise_server_exceptions=False)
    response = client.get("/notes", headers={"host": "www.example.com"})
    assert response.status_code == 200, response.text
    assert ran == ["public_notes"]
    assert "x-chio-receipt" in response.headers


# -- FastAPI's root_path, the app wrapped from outside -----------------------------------------


def _root_path_app() -> Any:
    app = FastAPI(root_path="/api")

    @app.get("/notes/{note_id}")
    @tool("srv-notes", "read_note")
    async def read(note_id: str) -> dict[str, Any]:
        ran.append(note_id)
        return {"ok": True}

    return ChioMiddleware(app, settings=settings(routes=[]), clock=FixedClock(NOW))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_wrapped_fastapi_app_is_routed_on_its_root_path() -> None:
    ran.clear()
    client = TestClient(_root_path_app(), raise_server_exceptions=False)
    assert client.get("/api/notes/secret").status_code == 401  # bound: a capability first
    assert ran == []
    grants = [{"server_id": "srv-notes", "tool_name": "read_note", "operations": ["invoke"]}]
    url = "/api/notes/1"
    headers = agent_headers("GET", url, cap=capability(grants), tool=("srv-notes", "read_note"))
    response = client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    assert ran == ["1"]


# -- Flask: WSGI middleware around app.wsgi_app before init_app --------------------------------


def _wsgi_rewriter(change: Callable[[dict[str, Any]], None]) -> type:
    class Rewriter:
        def __init__(self, app: Any) -> None:
            self.app = app

        def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
            change(environ)
            return self.app(environ, start_response)

    return Rewriter


WSGI_REWRITERS: dict[str, Callable[[Any], Any]] = {
    "method": _wsgi_rewriter(lambda e: e.update(REQUEST_METHOD="DELETE")),
    "path": _wsgi_rewriter(lambda e: e.update(PATH_INFO="/admin/notes")),
    "script name": _wsgi_rewriter(lambda e: e.update(SCRIPT_NAME="/x")),
    "query": _wsgi_rewriter(lambda e: e.update(QUERY_STRING="path=/etc/shadow")),
    "content type": _wsgi_rewriter(lambda e: e.update(CONTENT_TYPE="application/json")),
    "ProxyFix x_host": lambda app: ProxyFix(app, x_host=1),
    "ProxyFix x_prefix": lambda app: ProxyFix(app, x_prefix=1),
}


def _flask_app(wrap: Callable[[Any], Any]) -> flask.Flask:
    app = flask.Flask(__name__)
    app.url_map.host_matching = True
    app.url_map.default_subdomain = ""

    @app.get("/notes", host="www.example.com")
    @public
    def notes() -> Any:
        ran.append("public_notes")
        return {"ok": True}

    @app.delete("/notes", host="www.example.com")
    @tool("srv-admin", "purge", nonce=True)
    def purge() -> Any:
        ran.append("purge")
        return {"ok": True}

    @app.get("/notes", host="admin.example.com")
    @tool("srv-admin", "read_admin")
    def admin() -> Any:
        ran.append("admin")
        return {"ok": True}

    app.wsgi_app = wrap(app.wsgi_app)  # type: ignore[method-assign]
    FlaskChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    return app


FORWARDED = {
    "host": "www.example.com",
    "x-forwarded-host": "admin.example.com",
    "x-forwarded-prefix": "/x",
}


@pytest.mark.parametrize("changed", sorted(WSGI_REWRITERS))
def test_a_flask_request_changed_after_the_check_is_refused(changed: str) -> None:
    ran.clear()
    client = _flask_app(WSGI_REWRITERS[changed]).test_client()
    response = client.get("/notes", headers=FORWARDED)
    assert response.status_code == 503, (response.status_code, response.get_data())
    assert ran == []


def test_proxyfix_for_the_client_and_scheme_passes() -> None:
    ran.clear()
    app = _flask_app(lambda wsgi: ProxyFix(wsgi, x_for=1, x_proto=1))
    response = app.test_client().get("/notes", headers={**FORWARDED, "x-forwarded-proto": "https"})
    assert response.status_code == 200, response.get_data()
    assert ran == ["public_notes"]


# -- a mount's or a sub-app's own middleware, and FastAPI Header() arguments -----------------


class _Override:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-http-method-override":
                    scope = {**scope, "method": value.decode().upper()}
        await self.app(scope, receive, send)


def _sub_routes() -> list[Any]:
    return [Route("/notes", public(_public_notes), methods=["GET"]), Route("/notes", _purge, methods=["DELETE"])]


def _mount_with_middleware() -> Any:
    from starlette.routing import Mount

    app = Starlette(routes=[Mount("/api", routes=_sub_routes(), middleware=[Middleware(_Override)])])
    return ChioMiddleware(app, settings=settings(routes=[]), clock=FixedClock(NOW))


def _fastapi_sub_app() -> Any:
    sub = FastAPI()
    sub.router.routes.extend(_sub_routes())
    sub.add_middleware(_Override)
    app = FastAPI()
    app.mount("/api", sub)
    FastAPIChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    return app


@pytest.mark.parametrize("build", [_mount_with_middleware, _fastapi_sub_app])
def test_a_mounted_apps_own_middleware_cannot_change_the_route(build: Callable[[], Any]) -> None:
    ran.clear()
    client = TestClient(build(), raise_server_exceptions=False)
    assert client.get("/api/notes").status_code == 200  # nothing changed: the public GET
    assert ran == ["public_notes"]
    ran.clear()
    response = client.get("/api/notes", headers={"x-http-method-override": "DELETE"})
    assert response.status_code == 503, response.text
    assert "method" in response.json()["message"]
    assert ran == []


def _behind_x_target_rewriter(app: FastAPI) -> TestClient:
    """A client of ``app`` under Chio, with a middleware inside Chio that sets x-target."""
    app.add_middleware(_asgi_rewriter(_set_header(b"x-target", b"/etc/shadow")))
    return TestClient(
        ChioMiddleware(app, settings=settings(routes=[]), clock=FixedClock(NOW)),
        raise_server_exceptions=False,
    )


def test_a_header_the_handler_reads_cannot_be_added_after_the_check() -> None:
    from typing import Annotated

    from fastapi import Header

    ran.clear()
    app = FastAPI()

    @app.get("/files/read")
    @public
    async def read(x_target: Annotated[str, Header()] = "/workspace/a") -> dict[str, Any]:
        ran.append(x_target)
        return {"ok": True}

    client = _behind_x_target_rewriter(app)
    response = client.get("/files/read")
    assert response.status_code == 503, response.text
    assert "headers" in response.json()["message"]
    assert ran == []


def test_a_dispatcher_of_several_flask_apps_is_refused_at_construction() -> None:
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from chio_middleware.wsgi import ChioWSGIMiddleware

    front, api = flask.Flask("front"), flask.Flask("api")
    dispatcher = DispatcherMiddleware(front.wsgi_app, {"/api": api.wsgi_app})
    with pytest.raises(ValueError, match="DispatcherMiddleware"):
        ChioWSGIMiddleware(dispatcher, settings=settings(routes=[]))
    # Each mounted app protected on its own is the supported shape.
    FlaskChio(api, settings=settings(routes=[]), clock=FixedClock(NOW))
    mounted = DispatcherMiddleware(front.wsgi_app, {"/api": api.wsgi_app})
    from werkzeug.test import Client

    reply = Client(mounted).get("/api/anything")
    assert reply.status_code == 404
    assert "X-Chio-Receipt" in reply.headers  # the request went through api's Chio


def test_a_router_mounted_after_the_first_request_is_checked_too() -> None:
    from starlette.routing import Mount

    ran.clear()
    app = Starlette(routes=[Route("/notes", public(_public_notes), methods=["GET"])])
    middleware = ChioMiddleware(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    client = TestClient(middleware, raise_server_exceptions=False)
    assert client.get("/notes").status_code == 200
    late = Starlette(routes=_sub_routes(), middleware=[Middleware(_Override)])
    app.router.routes.append(Mount("/late", app=late))
    ran.clear()
    response = client.get("/late/notes", headers={"x-http-method-override": "DELETE"})
    assert response.status_code == 503, response.text
    assert ran == []


def test_a_header_model_field_cannot_be_added_after_the_check() -> None:
    from typing import Annotated

    from fastapi import Header
    from pydantic import BaseModel

    class Target(BaseModel):
        x_target: str = "/workspace/a"

    ran.clear()
    app = FastAPI()

    @app.get("/files/read")
    @public
    async def read(h: Annotated[Target, Header()]) -> dict[str, Any]:
        ran.append(h.x_target)
        return {"ok": True}

    client = _behind_x_target_rewriter(app)
    assert client.get("/files/read").status_code == 503
    assert ran == []


def test_a_dispatcher_set_as_the_flask_apps_wsgi_app_is_refused() -> None:
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from chio_middleware.wsgi import ChioWSGIMiddleware

    front, api = flask.Flask("front"), flask.Flask("api")
    front.wsgi_app = DispatcherMiddleware(front.wsgi_app, {"/api": api})  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="DispatcherMiddleware"):
        ChioWSGIMiddleware(front, settings=settings(routes=[]))
    with pytest.raises(ValueError, match="DispatcherMiddleware"):
        FlaskChio(front, settings=settings(routes=[]), clock=FixedClock(NOW))


def test_a_flask_url_value_preprocessor_cannot_change_a_checked_parameter() -> None:
    def build(preprocess: Callable[[Any, Any], None]) -> flask.Flask:
        app = flask.Flask(__name__)

        @app.url_value_preprocessor
        def pre(endpoint: Any, values: Any) -> None:
            preprocess(endpoint, values)

        @app.get("/<lang>/notes/<note>")
        @public
        def notes(note: str, lang: str = "en") -> Any:
            ran.append(note)
            return {"ok": True}

        FlaskChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
        return app

    def rewrite(endpoint: Any, values: Any) -> None:
        values["note"] = "../../etc/shadow"

    def take_out(endpoint: Any, values: Any) -> None:
        flask.g.lang = values.pop("lang", "en")  # Flask's documented idiom: the view reads less

    ran.clear()
    assert build(rewrite).test_client().get("/en/notes/a").status_code == 503
    assert ran == []
    assert build(take_out).test_client().get("/en/notes/a").status_code == 200
    assert ran == ["a"]


def test_a_header_read_through_a_later_alias_choice_cannot_be_added_after_the_check() -> None:
    # The routed header names took each Header()'s first alias only (found by an outside
    # review); FastAPI reads every AliasChoices name.
    from typing import Annotated

    from fastapi import Header
    from pydantic import AliasChoices

    ran.clear()
    app = FastAPI()

    @app.get("/files/read")
    @public
    async def read(
        target: Annotated[str, Header(validation_alias=AliasChoices("x-a", "x-target"))] = "/w"
    ) -> dict[str, Any]:
        ran.append(target)
        return {"ok": True}

    client = _behind_x_target_rewriter(app)
    assert client.get("/files/read").status_code == 503
    assert ran == []
