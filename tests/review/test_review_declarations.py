"""Outside review (2026-12-01, second): a FastAPI route declared as two tools.

FastAPI puts an ``APIRouter``'s dependencies before the route's own, and the resolver took
the first ``Depends(tool(...))`` it found: a route whose own dependency declared a stronger
tool (``nonce=True``) ran as the router's tool. Every placement of two declarations that
disagree is now refused: at start-up, and per request where no start-up ran. One
declaration given in several places is the route's; the endpoint's own mark still wins.
"""

from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from starlette.testclient import TestClient

from chio_middleware.core.clock import FixedClock
from chio_middleware.core.errors import AccessDenied
from chio_middleware.core.routing import RouteTable
from chio_middleware.integrations import tool
from chio_middleware.integrations.fastapi import Caller
from chio_middleware.integrations.fastapi import Chio as FastAPIChio

from ..middleware.harness import NOW, agent_headers, capability, settings

WRITE = tool("srv-notes", "write_note")
PURGE = tool("srv-admin", "purge_note", nonce=True)

ran: list[Any] = []


async def _handler(note_id: str, caller: Caller) -> dict[str, Any]:
    ran.append((note_id, caller.tool))
    return {"ok": True}


def _sub_dependency() -> None:
    return None


def _nested(app: FastAPI, inner: Any, outer: Any) -> None:
    router = APIRouter(prefix="/notes", dependencies=[Depends(outer)])
    router.add_api_route("/{note_id}", _handler, methods=["DELETE"], dependencies=[Depends(inner)])
    app.include_router(router)


def _included_with_dependencies(app: FastAPI, inner: Any, outer: Any) -> None:
    router = APIRouter(prefix="/notes")
    router.add_api_route("/{note_id}", _handler, methods=["DELETE"], dependencies=[Depends(inner)])
    app.include_router(router, dependencies=[Depends(outer)])


def _sub_dependant(app: FastAPI, inner: Any, outer: Any) -> None:
    def dependency(_: None = Depends(inner)) -> None:
        return None

    router = APIRouter(prefix="/notes", dependencies=[Depends(outer)])
    router.add_api_route("/{note_id}", _handler, methods=["DELETE"], dependencies=[Depends(dependency)])
    app.include_router(router)


def _two_on_the_route(app: FastAPI, inner: Any, outer: Any) -> None:
    app.add_api_route(
        "/notes/{note_id}", _handler, methods=["DELETE"], dependencies=[Depends(outer), Depends(inner)]
    )


PLACEMENTS = {
    "router and route": _nested,
    "include_router and route": _included_with_dependencies,
    "router and a sub-dependency": _sub_dependant,
    "twice on the route": _two_on_the_route,
}


def _app(place: Any, inner: Any, outer: Any) -> FastAPI:
    app = FastAPI()
    place(app, inner, outer)
    FastAPIChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    return app


def _delete(client: TestClient, grant_tool: tuple[str, str]) -> int:
    url = "/notes/7"
    grants = [{"server_id": grant_tool[0], "tool_name": grant_tool[1], "operations": ["invoke"]}]
    headers = agent_headers("DELETE", url, cap=capability(grants), tool=grant_tool)
    return client.delete(url, headers=headers).status_code


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
def test_two_declarations_fail_the_start_up(placement: str) -> None:
    app = _app(PLACEMENTS[placement], PURGE, WRITE)
    with pytest.raises(Exception, match="declared as more than one tool"), TestClient(app):
        pass


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
def test_two_declarations_refuse_every_request_without_a_start_up(placement: str) -> None:
    ran.clear()
    client = TestClient(_app(PLACEMENTS[placement], PURGE, WRITE), raise_server_exceptions=False)
    # Each request meets the conflict in its route (403) before the start-up check that
    # the first one runs would refuse the configuration (503).
    assert _delete(client, ("srv-notes", "write_note")) == 403
    assert _delete(client, ("srv-admin", "purge_note")) == 403
    assert ran == []


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
def test_one_declaration_given_twice_is_the_routes(placement: str) -> None:
    ran.clear()
    with TestClient(_app(PLACEMENTS[placement], WRITE, tool("srv-notes", "write_note"))) as client:
        assert _delete(client, ("srv-notes", "write_note")) == 200
    assert ran == [("7", ("srv-notes", "write_note"))]


def test_the_endpoints_own_mark_wins_over_the_routers() -> None:
    ran.clear()
    app = FastAPI()
    router = APIRouter(prefix="/notes", dependencies=[Depends(WRITE)])

    @router.delete("/{note_id}")
    @tool("srv-admin", "purge_note", nonce=True)
    async def purge(note_id: str, caller: Caller) -> dict[str, Any]:
        ran.append((note_id, caller.tool))
        return {"ok": True}

    app.include_router(router)
    FastAPIChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    with TestClient(app) as client:
        assert _delete(client, ("srv-notes", "write_note")) == 403  # not the router's tool
        assert _delete(client, ("srv-admin", "purge_note")) == 428  # its own: a nonce first
    assert ran == []


def test_a_conflict_met_per_request_is_refused() -> None:
    from chio_middleware.integrations._declare import Conflict, NativeRoute, route_for

    native = NativeRoute(
        "matched", pattern="/notes/{note_id}", params={}, declaration=Conflict((WRITE, PURGE))
    )
    with pytest.raises(AccessDenied, match="declare it once"):
        route_for(native, "DELETE", "/notes/7", RouteTable([]))


def test_a_partial_of_a_declared_endpoint_is_that_endpoint() -> None:
    import functools

    import flask
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from chio_middleware.integrations.flask import Chio as FlaskChio
    from chio_middleware.integrations.starlette import Chio as StarletteChio

    @tool("srv-files", "read_file")
    async def read(request: Request, root: str) -> JSONResponse:
        ran.append(("starlette", root))
        return JSONResponse({"ok": True})

    ran.clear()
    app = Starlette(routes=[Route("/files/read", functools.partial(read, root="/srv"))])
    StarletteChio(app, settings=settings(routes=[], unbound_routes="refuse"), clock=FixedClock(NOW))
    with TestClient(app) as client:  # start-up sees the route as declared, not unbound
        assert client.get("/files/read?path=/etc/shadow").status_code == 401

    @tool("srv-files", "read_file")
    def flask_read(root: str) -> Any:
        ran.append(("flask", root))
        return {"ok": True}

    flask_app = flask.Flask(__name__)
    view = functools.partial(flask_read, root="/srv")
    view.__name__ = "read"  # type: ignore[attr-defined]  # Flask names the endpoint after it
    flask_app.add_url_rule("/files/read", view_func=view)
    FlaskChio(flask_app, settings=settings(routes=[], unbound_routes="refuse"), clock=FixedClock(NOW))
    assert flask_app.test_client().get("/files/read?path=/etc/shadow").status_code == 401
    assert ran == []
