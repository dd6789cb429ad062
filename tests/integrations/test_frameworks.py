"""The framework-native API as a user writes it (issue 9 items 1, 3, 6, 7, 8)."""

from __future__ import annotations

import json
import logging
from typing import Any

import flask
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.responses import JSONResponse as StarletteJSON
from starlette.routing import Route
from starlette.testclient import TestClient

from chio_middleware.core.clock import FixedClock
from chio_middleware.integrations import fastapi as chio_fastapi
from chio_middleware.integrations import flask as chio_flask
from chio_middleware.integrations import starlette as chio_starlette
from chio_middleware.runtime import Denial

from ..middleware.harness import NOW, agent_headers, capability, settings

GRANTS = [{"server_id": "srv-notes", "tool_name": "*", "operations": ["invoke"]}]


def fastapi_app(**options: Any) -> tuple[FastAPI, chio_fastapi.Chio]:
    app = FastAPI()
    chio = chio_fastapi.Chio(app, settings=settings(routes=[]), clock=FixedClock(NOW), **options)

    @app.post("/notes/{note_id}")
    @chio.tool("srv-notes", "write_note")
    async def write(note_id: int, caller: chio_fastapi.Caller) -> dict[str, Any]:
        return {
            "note_id": note_id,
            "capability_id": caller.capability_id,
            "tool": list(caller.tool or ()),
            "arguments": caller.arguments,
            "receipt_id": caller.receipt_id,
        }

    @app.delete("/notes/{note_id}")
    @chio.tool("srv-notes", "delete_note", nonce=True)
    async def delete(note_id: int) -> dict[str, Any]:
        return {}

    @app.get("/health")
    @chio.public
    async def health(request: Request) -> dict[str, Any]:
        return {"capability_id": request.state.chio_capability_id}

    @app.get("/crash")
    @chio.tool("srv-notes", "crash")
    async def crash() -> dict[str, Any]:
        raise RuntimeError("boom")

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"app_handler": type(exc).__name__}, status_code=500)

    return app, chio


def test_fastapi_context_dependency_and_receipt_id() -> None:
    app, _ = fastapi_app()
    client = TestClient(app)
    url = "/notes/5?tag=a"
    response = client.post(url, headers=agent_headers("POST", url, cap=capability(GRANTS), tool=("srv-notes", "write_note")))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["capability_id"] == "cap-1" and body["tool"] == ["srv-notes", "write_note"]
    # Starlette's router gives "5"; FastAPI converts it to int by the annotation afterwards
    assert body["arguments"] == {"note_id": "5", "tag": "a"}
    assert body["receipt_id"] == response.headers["x-chio-receipt-id"]


def test_context_names_are_none_without_a_capability() -> None:
    app, _ = fastapi_app()
    client = TestClient(app)
    response = client.get("/health")
    assert response.status_code == 200 and response.json() == {"capability_id": None}


def test_app_exception_handlers_run() -> None:
    app, _ = fastapi_app()
    client = TestClient(app, raise_server_exceptions=False)
    response = client.get("/crash", headers=agent_headers("GET", "/crash", cap=capability(GRANTS), tool=("srv-notes", "crash")))
    assert response.status_code == 500 and response.json() == {"app_handler": "RuntimeError"}


def test_denials_can_take_the_apps_body_shape() -> None:
    def render(denial: Denial) -> tuple[bytes, str]:
        return json.dumps({"problem": denial.code, "ref": denial.receipt_id}).encode(), "application/problem+json"

    app, _ = fastapi_app(render_denial=render)
    response = TestClient(app).post("/notes/1")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {"problem": "chio_capability_required", "ref": response.headers["x-chio-receipt-id"]}
    assert response.headers["www-authenticate"] == 'ChioDPoP error="chio_capability_required"'


def test_openapi_documents_the_chio_headers_and_tools() -> None:
    app, _ = fastapi_app()
    schema = TestClient(app).get("/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) >= {"ChioCapability", "ChioDPoP", "ChioExecutionNonce"}
    delete = schema["paths"]["/notes/{note_id}"]["delete"]
    assert delete["x-chio-tool"] == {"tool_server": "srv-notes", "tool_name": "delete_note", "require_dpop": True, "require_nonce": True}
    assert delete["security"] == [{"ChioCapability": [], "ChioDPoP": [], "ChioExecutionNonce": []}]
    assert schema["paths"]["/health"]["get"]["security"] == []


def test_openapi_and_docs_can_be_public_under_deny() -> None:
    app = FastAPI()
    chio_fastapi.Chio(app, settings=settings(routes=[], default_policy="deny", public_paths=["/docs", "/openapi.json"]))
    client = TestClient(app)
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.get("/redoc").status_code == 403


def test_starlette_unbound_routes_refuse_fails_the_lifespan(caplog: pytest.LogCaptureFixture) -> None:
    async def bare(request: Any) -> StarletteJSON:
        return StarletteJSON({})

    @chio_starlette.Chio.public
    async def ok(request: Any) -> StarletteJSON:
        return StarletteJSON({})

    app = Starlette(routes=[Route("/bare", bare, methods=["POST"]), Route("/ok", ok)])
    chio_starlette.Chio(app, settings=settings(routes=[], unbound_routes="refuse"))
    with pytest.raises(RuntimeError, match=r"unbound_routes=refuse.*POST /bare"), TestClient(app):
        pass


def test_starlette_coverage_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async def bare(request: Any) -> StarletteJSON:
        return StarletteJSON({})

    @chio_starlette.Chio.tool("s", "t")
    async def note(request: Any) -> StarletteJSON:
        return StarletteJSON({})

    app = Starlette(routes=[Route("/bare", bare, methods=["POST"]), Route("/note", note)])
    chio_starlette.Chio(app, settings=settings(routes=[]))
    caplog.set_level(logging.INFO, logger="chio_middleware")
    with TestClient(app):
        pass
    out = caplog.text
    assert out.count("chio_route_coverage") == 1
    assert "POST /bare" in out and "unbound" in out and "tool s/t" in out


def test_a_bad_setting_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="guards"):
        chio_starlette.Chio(settings=settings(guards=["no.such.module:Guard"]))


def test_add_middleware_with_a_bad_setting_fails_the_lifespan() -> None:
    """Starlette builds the stack lazily: the error must still stop the server."""
    from chio_middleware.asgi import ChioMiddleware

    app = Starlette()
    app.add_middleware(ChioMiddleware, settings=settings(guards=["no.such.module:Guard"]))
    with pytest.raises(RuntimeError, match="guards"), TestClient(app):
        pass


def flask_app(**config: Any) -> tuple[flask.Flask, chio_flask.Chio]:
    app = flask.Flask("t")
    app.config.update(
        CHIO_SIGNING_KEY=settings().signing_key.get_secret_value(),  # type: ignore[union-attr]
        CHIO_TRUSTED_ISSUERS=settings().trusted_issuers,
        CHIO_RECEIPT_SINK="memory",
        **config,
    )
    chio = chio_flask.Chio(clock=FixedClock(NOW))

    @app.post("/notes/<int:note_id>")
    @chio.tool("srv-notes", "write_note")
    def write(note_id: int) -> Any:
        caller = flask.g.chio
        return {"note_id": note_id, "capability_id": caller.capability_id, "arguments": caller.arguments}

    @app.get("/health")
    @chio.public
    def health() -> Any:
        return {"capability_id": flask.request.environ["chio.capability_id"]}

    return app, chio


def test_flask_extension_from_app_config_with_g_chio() -> None:
    app, chio = flask_app()
    chio.init_app(app)
    client = app.test_client()
    response = client.post("/notes/3", headers=agent_headers("POST", "/notes/3", cap=capability(GRANTS), tool=("srv-notes", "write_note")))
    assert response.status_code == 200, response.get_data()
    assert response.get_json() == {"note_id": 3, "capability_id": "cap-1", "arguments": {"note_id": 3}}
    assert client.get("/health").get_json() == {"capability_id": None}


def test_flask_unknown_config_key_is_an_error_naming_it() -> None:
    app, chio = flask_app(CHIO_RATE_LIMITS="5/minute")
    with pytest.raises(ValueError, match="rate_limits"):
        chio.init_app(app)


def test_flask_unbound_routes_refuse() -> None:
    app, chio = flask_app(CHIO_UNBOUND_ROUTES="refuse")

    @app.post("/bare")
    def bare() -> Any:
        return {}

    with pytest.raises(ValueError, match="POST /bare"):
        chio.init_app(app)


def test_flask_routes_added_after_init_app_are_checked_at_the_first_request() -> None:
    app, chio = flask_app(CHIO_UNBOUND_ROUTES="refuse")
    chio.init_app(app)

    @app.post("/late")
    def late() -> Any:
        return {}

    client = app.test_client()
    assert client.get("/health").status_code == 503
    assert client.post("/late").status_code == 503




def test_a_settings_binding_that_names_no_framework_route_fails_start_up() -> None:
    """Found by the differential suite: binding /typed/{id:int} for FastAPI's /typed/{id}
    matched no request FastAPI dispatches there, so /typed/7%20 ran unbound."""
    from chio_middleware import RouteBinding

    app = FastAPI()

    @app.get("/typed/{id}")
    async def typed(id: int) -> dict[str, Any]:
        return {}

    binding = RouteBinding(method="GET", path="/typed/{id:int}", tool_server="s", tool_name="t")
    chio_fastapi.Chio(app, settings=settings(routes=[binding]))
    with pytest.raises(RuntimeError, match=r"name no route.*GET /typed/\{id:int\}"), TestClient(app):
        pass


def test_bindings_name_framework_routes_by_shape() -> None:
    from chio_middleware import RouteBinding
    from chio_middleware.core.routing import RouteTable, template_shape

    assert template_shape("/notes/<note_id>") == template_shape("/notes/{other}") == "/notes/{str}"
    assert template_shape("/n/<int:id>") == template_shape("/n/{id:int}") != template_shape("/n/{id}")
    table = RouteTable([RouteBinding(method="DELETE", path="/notes/{note_id}", tool_server="s", tool_name="t")])
    assert table.binding_for("DELETE", "/notes/<note_id>") is not None
    assert table.binding_for("DELETE", "/notes/<int:note_id>") is None


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/typed/7?limit=5&flag=true", 200),
        ("/typed/7", 200),
        ("/typed/7%20", 400),
        ("/typed/%207", 400),
        ("/typed/+7", 400),
        ("/typed/07", 400),
        ("/typed/7?limit=%205", 400),
        ("/typed/7?flag=yes", 400),
        ("/typed/7?flag=on", 400),
        ("/typed/7?flag=1", 400),
        ("/typed/7?ratio=2.0", 400),
        ("/typed/7?ratio=2.5", 200),
    ],
)
def test_fastapi_typed_parameters_are_checked_as_the_handler_reads_them(url: str, status: int) -> None:
    """Found by the differential suite: pydantic turns '7 ' into 7 and 'yes' into True."""
    app = FastAPI()
    chio = chio_fastapi.Chio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    seen: list[tuple[int, int, bool, float]] = []

    @app.get("/typed/{id}")
    @chio.tool("srv-notes", "typed")
    async def typed(id: int, limit: int = 0, flag: bool = False, ratio: float = 0.0) -> dict[str, Any]:
        seen.append((id, limit, flag, ratio))
        return {}

    client = TestClient(app)
    response = client.get(url, headers=agent_headers("GET", url, cap=capability(GRANTS), tool=("srv-notes", "typed")))
    assert response.status_code == status, response.text
    assert len(seen) == (1 if status == 200 else 0)


def test_one_tool_over_a_read_and_a_side_effect_method_fails_start_up() -> None:
    """Found by the review: @tool(read_note) on a GET+DELETE view let a read grant delete."""
    app, chio = flask_app()

    @app.route("/both/<note_id>", methods=["GET", "DELETE"])
    @chio.tool("srv-notes", "read_note")
    def both(note_id: str) -> Any:
        return {}

    with pytest.raises(ValueError, match=r"declare one tool per method: DELETE/GET /both/<note_id>"):
        chio.init_app(app)


def test_a_middleware_inside_chio_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    """The review's F3: a middleware between the check and the router can change the route."""
    from starlette.middleware.gzip import GZipMiddleware

    app = Starlette()
    app.add_middleware(GZipMiddleware)  # added first: it ends up inside Chio
    chio_starlette.Chio(app, settings=settings(routes=[]))
    caplog.set_level(logging.WARNING, logger="chio_middleware")
    with TestClient(app):
        pass
    assert "chio_middleware_not_innermost inner='GZipMiddleware'" in caplog.text

    outer = Starlette()
    chio_starlette.Chio(outer, settings=settings(routes=[]))
    outer.add_middleware(GZipMiddleware)  # added after: outside Chio, harmless
    caplog.clear()
    with TestClient(outer):
        pass
    assert "chio_middleware_not_innermost" not in caplog.text
