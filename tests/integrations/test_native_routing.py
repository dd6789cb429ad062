"""The framework's own router decides which route a request is (PROTOCOL.md 5.1).

Each app's handlers record the route they ran as; the receipt names the route the
middleware checked. For every request: the two agree, or the middleware refused.
"""

from __future__ import annotations

from typing import Any

import flask
import pytest
from fastapi import APIRouter, Depends, FastAPI
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from chio_middleware.asgi import ChioMiddleware
from chio_middleware.core.clock import FixedClock
from chio_middleware.integrations import public, tool
from chio_middleware.integrations._declare import NativeRoute
from chio_middleware.integrations.flask_routing import native_route as flask_route
from chio_middleware.integrations.starlette_routing import native_route as starlette_route
from chio_middleware.integrations.starlette_routing import router_of
from chio_middleware.wsgi import ChioWSGIMiddleware

from ..middleware.harness import NOW, agent_headers, capability, settings

GRANTS = [{"server_id": "srv", "tool_name": "*", "operations": ["invoke"]}]
ran: list[tuple[str, dict[str, Any]]] = []


def starlette_app() -> Starlette:
    @tool("srv", "read_blob")
    async def blob(request: Request) -> JSONResponse:
        ran.append(("read_blob", dict(request.path_params)))
        return JSONResponse({"ok": True})

    @tool("srv", "get_note")
    async def note(request: Request) -> JSONResponse:
        ran.append(("get_note", dict(request.path_params)))
        return JSONResponse({"ok": True})

    @tool("srv", "delete_note", nonce=True)
    async def delete(request: Request) -> JSONResponse:
        ran.append(("delete_note", dict(request.path_params)))
        return JSONResponse({"ok": True})

    class Items(HTTPEndpoint):
        @tool("srv", "list_items")
        async def get(self, request: Request) -> JSONResponse:
            ran.append(("list_items", {}))
            return JSONResponse([])

    @public
    async def health(request: Request) -> JSONResponse:
        ran.append(("health", {}))
        return JSONResponse({"ok": True})

    api = Starlette(routes=[Route("/notes/{note_id:int}", note), Route("/notes/{note_id:int}", delete, methods=["DELETE"])])
    return Starlette(
        routes=[
            Route("/blobs/{p:path}", blob),
            Route("/items", Items),
            Route("/health", health, methods=["GET", "POST"]),
            Mount("/api/{version}", app=api),
        ]
    )


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/blobs/a/b/c.txt", NativeRoute("matched", "/blobs/{p:path}", {"p": "a/b/c.txt"})),
        ("GET", "/api/v1/notes/7", NativeRoute("matched", "/api/{version}/notes/{note_id:int}", {"version": "v1", "note_id": 7})),
        ("DELETE", "/api/v1/notes/7", NativeRoute("matched", "/api/{version}/notes/{note_id:int}", {"version": "v1", "note_id": 7})),
        ("POST", "/api/v1/notes/7", NativeRoute("method_not_allowed", "/api/{version}/notes/{note_id:int}")),
        ("GET", "/api/v1/notes/x", NativeRoute("not_found")),
        ("GET", "/items/", NativeRoute("redirect")),
        ("GET", "/items", NativeRoute("matched", "/items", {})),
    ],
)
def test_starlette_routes_as_starlette_dispatches(method: str, path: str, expected: NativeRoute) -> None:
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}
    found = starlette_route(router_of(starlette_app()), scope)
    assert (found.outcome, found.pattern, found.params) == (expected.outcome, expected.pattern, expected.params)


def _asgi(app: Any) -> TestClient:
    return TestClient(ChioMiddleware(app, settings=settings(routes=[]), clock=FixedClock(NOW)), raise_server_exceptions=False)


def test_declared_starlette_routes_are_checked_as_the_route_that_runs() -> None:
    client = _asgi(starlette_app())
    cap = capability(GRANTS)
    for url, tool_name, params in [
        ("/blobs/a/b", "read_blob", {"p": "a/b"}),
        ("/api/v2/notes/3", "get_note", {"version": "v2", "note_id": 3}),
        ("/items", "list_items", {}),
    ]:
        ran.clear()
        headers = agent_headers("GET", url, cap=cap, tool=("srv", tool_name))
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        assert ran == [(tool_name, params)]
    # unbound before: now the nonce route demands its nonce
    ran.clear()
    url = "/api/v1/notes/7"
    response = client.delete(url, headers=agent_headers("DELETE", url, cap=cap, tool=("srv", "delete_note")))
    assert response.status_code == 428 and ran == []
    # a proof for another tool than the one the router dispatches to is refused
    response = client.get("/items", headers=agent_headers("GET", "/items", cap=cap, tool=("srv", "read_blob")))
    assert response.status_code == 401 and ran == []


def test_public_routes_need_no_capability_even_under_deny() -> None:
    app = starlette_app()
    client = TestClient(ChioMiddleware(app, settings=settings(routes=[], default_policy="deny"), clock=FixedClock(NOW)))
    ran.clear()
    assert client.post("/health").status_code == 200 and ran == [("health", {})]
    assert client.get("/items").status_code == 401  # a declared tool needs a capability
    assert client.get("/nowhere").status_code == 403  # unbound under deny


def fastapi_app() -> FastAPI:
    app = FastAPI()
    router = APIRouter(dependencies=[Depends(tool("srv", "router_tool"))])

    @router.get("/r/{item_id}")
    async def in_router(item_id: int) -> dict[str, Any]:
        ran.append(("router_tool", {"item_id": item_id}))
        return {}

    @app.post("/notes/{note_id}")
    @tool("srv", "write_note")
    async def write(note_id: int) -> dict[str, Any]:
        ran.append(("write_note", {"note_id": note_id}))
        return {}

    app.include_router(router)
    return app


def test_fastapi_declarations_on_endpoints_and_routers() -> None:
    client = _asgi(fastapi_app())
    cap = capability(GRANTS)
    for method, url, tool_name, params in [
        ("POST", "/notes/5", "write_note", {"note_id": 5}),
        ("GET", "/r/9", "router_tool", {"item_id": 9}),
    ]:
        ran.clear()
        response = client.request(method, url, headers=agent_headers(method, url, cap=cap, tool=("srv", tool_name)))
        assert response.status_code == 200, response.text
        assert ran == [(tool_name, params)]
        receipt_meta = response.headers["x-chio-receipt-id"]
        assert receipt_meta


def flask_app() -> flask.Flask:
    app = flask.Flask("native")

    @app.route("/notes/<int:note_id>", methods=["DELETE"])
    @tool("srv", "delete_note", nonce=True)
    def delete(note_id: int) -> Any:
        ran.append(("delete_note", {"note_id": note_id}))
        return {}

    @app.get("/files/<path:p>")
    @tool("srv", "read_file")
    def read(p: str) -> Any:
        ran.append(("read_file", {"p": p}))
        return {}

    @app.get("/loose", strict_slashes=False)
    @tool("srv", "loose")
    def loose() -> Any:
        ran.append(("loose", {}))
        return {}

    @app.get("/dir/")
    @tool("srv", "dir")
    def directory() -> Any:
        ran.append(("dir", {}))
        return {}

    return app


@pytest.mark.parametrize(
    ("method", "path", "outcome", "pattern", "params"),
    [
        ("DELETE", "/notes/7", "matched", "/notes/<int:note_id>", {"note_id": 7}),
        ("GET", "/notes/7", "method_not_allowed", None, None),
        ("GET", "/files/a/b", "matched", "/files/<path:p>", {"p": "a/b"}),
        ("GET", "/loose/", "matched", "/loose", {}),
        ("GET", "/dir", "redirect", None, None),
        ("GET", "/nope", "not_found", None, None),
    ],
)
def test_flask_routes_as_werkzeug_dispatches(method: str, path: str, outcome: str, pattern: str | None, params: dict[str, Any] | None) -> None:
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "SERVER_NAME": "localhost",
               "SERVER_PORT": "80", "wsgi.url_scheme": "http", "HTTP_HOST": "localhost", "QUERY_STRING": ""}
    found = flask_route(flask_app(), environ)
    assert (found.outcome, found.pattern, found.params) == (outcome, pattern, params)


def test_declared_flask_routes_are_checked_as_the_route_that_runs() -> None:
    app = flask_app()
    app.wsgi_app = ChioWSGIMiddleware(app.wsgi_app, settings=settings(routes=[]), clock=FixedClock(NOW))  # type: ignore[method-assign]
    client = app.test_client()
    cap = capability(GRANTS)
    for url, tool_name, params in [("/files/a/b", "read_file", {"p": "a/b"}), ("/loose/", "loose", {})]:
        ran.clear()
        response = client.get(url, headers=agent_headers("GET", url, cap=cap, tool=("srv", tool_name)))
        assert response.status_code == 200, response.get_data()
        assert ran == [(tool_name, params)]
    ran.clear()
    response = client.delete("/notes/7", headers=agent_headers("DELETE", "/notes/7", cap=cap, tool=("srv", "delete_note")))
    assert response.status_code == 428 and ran == []
    # Werkzeug's int converter takes any Unicode digit: still the nonce route
    url = "/notes/%D9%A7"
    response = client.delete(url, headers=agent_headers("DELETE", url, cap=cap, tool=("srv", "delete_note")))
    assert response.status_code == 428 and ran == []


def test_a_declaration_twice_is_refused() -> None:
    def endpoint() -> None: ...

    tool("a", "b")(endpoint)
    with pytest.raises(ValueError, match="declared twice"):
        tool("a", "c")(endpoint)



def test_head_on_a_class_endpoint_is_checked_as_its_get_handler() -> None:
    """HTTPEndpoint and MethodView run get() for HEAD: the declaration on get() applies."""
    client = _asgi(starlette_app())
    ran.clear()
    assert client.head("/items").status_code == 401 and ran == []

    from flask.views import MethodView

    app = flask.Flask("views")

    class Items(MethodView):
        @tool("srv", "list_items")
        def get(self) -> Any:
            ran.append(("list_items", {}))
            return {}

    app.add_url_rule("/items", view_func=Items.as_view("items"))
    app.wsgi_app = ChioWSGIMiddleware(app.wsgi_app, settings=settings(routes=[]), clock=FixedClock(NOW))  # type: ignore[method-assign]
    assert app.test_client().head("/items").status_code == 401 and ran == []
