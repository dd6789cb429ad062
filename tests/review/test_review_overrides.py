"""FastAPI ``dependency_overrides``: the dependency that runs is the one checked.

FastAPI replaces an overridden dependency at request time (``solve_dependencies`` builds
the override's own dependant), so the parameters the handler's inputs come from are the
override's, not those of the function the route was declared with. The check walked the
declared tree only: an override reading a typed query parameter, a ``Header()`` or a body
member was unseen (found by reading FastAPI's ``solve_dependencies`` while caching the
route facts). The table gives each kind of input to an override, with a value the checks
must see (a constraint's refusal, or a rewritten typed value's 400), and records what
the handler read.
"""

from typing import Annotated, Any

import pytest
from fastapi import Body, Cookie, Depends, FastAPI, Header, Query
from pydantic import BaseModel
from starlette.testclient import TestClient

from chio_middleware.core.clock import FixedClock
from chio_middleware.integrations import tool
from chio_middleware.integrations.fastapi import Chio as FastAPIChio

from ..middleware.harness import NOW, agent_headers, capability, settings

ran: list[Any] = []

WORKSPACE = {"type": "path_prefix", "value": "/workspace/"}


def _grants(constraint: dict[str, Any] | None) -> list[dict[str, Any]]:
    grant: dict[str, Any] = {"server_id": "srv-files", "tool_name": "write", "operations": ["invoke"]}
    if constraint is not None:
        grant["constraints"] = [constraint]
    return [grant]


def declared() -> str:  # what the route is written against: reads nothing
    return "/workspace/default"


def in_query(target: Annotated[str, Query()]) -> str:
    return target


def typed_query(count: Annotated[int, Query()]) -> str:
    return str(count)


def in_header(x_target: Annotated[str, Header()]) -> str:
    return x_target


def in_cookie(target: Annotated[str, Cookie()]) -> str:
    return target


def body_member(count: Annotated[int, Body(embed=True)]) -> str:
    return str(count)


def nested(inner: Annotated[str, Depends(in_header)]) -> str:  # an override with its own dependency
    return inner


def _app(override: Any, *, body: bool = False) -> FastAPI:
    app = FastAPI()

    if body:  # the route reads a body, so FastAPI parses one for the override to read from

        @app.post("/write")
        @tool("srv-files", "write")
        async def write_body(
            note: Annotated[str, Body(embed=True)], target: Annotated[str, Depends(declared)]
        ) -> dict[str, Any]:
            ran.append(target)
            return {"ok": True}

    else:

        @app.post("/write")
        @tool("srv-files", "write")
        async def write(target: Annotated[str, Depends(declared)]) -> dict[str, Any]:
            ran.append(target)
            return {"ok": True}

    FastAPIChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    app.dependency_overrides[declared] = override
    return app


def _post(
    app: FastAPI,
    query: str = "",
    *,
    header: str | None = None,
    cookie: str | None = None,
    body: bytes = b"",
    constraint: dict[str, Any] | None = WORKSPACE,
) -> int:
    url = "/write" + (f"?{query}" if query else "")
    headers = agent_headers(
        "POST", url, cap=capability(_grants(constraint)), body=body, tool=("srv-files", "write")
    )
    if body:
        headers["content-type"] = "application/json"
    if header is not None:
        headers["x-target"] = header
    if cookie is not None:
        headers["cookie"] = f"target={cookie}"
    ran.clear()
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: the app is reused
    return int(client.post(url, headers=headers, content=body).status_code)


#: override, request, status the checks must give, what the handler reads when it runs
CASES: list[Any] = [
    pytest.param(in_query, {"query": "target=/etc/passwd"}, 403, id="query-outside"),
    pytest.param(in_query, {"query": "target=/workspace/a"}, 200, id="query-inside"),
    pytest.param(in_header, {"header": "/etc/passwd"}, 403, id="header-outside"),
    pytest.param(in_header, {"header": "/workspace/a"}, 200, id="header-inside"),
    pytest.param(in_cookie, {"cookie": "/etc/passwd"}, 403, id="cookie-outside"),
    pytest.param(in_cookie, {"cookie": "/workspace/a"}, 200, id="cookie-inside"),
    pytest.param(nested, {"header": "/etc/passwd"}, 403, id="override-dependency-outside"),
    pytest.param(nested, {"header": "/workspace/a"}, 200, id="override-dependency-inside"),
    pytest.param(typed_query, {"query": "count=%2B7", "constraint": None}, 400, id="typed-rewritten"),
    pytest.param(typed_query, {"query": "count=7", "constraint": None}, 200, id="typed-canonical"),
]


@pytest.mark.parametrize(("override", "request_", "expected"), CASES)
def test_an_overriding_dependency_is_the_one_checked(
    override: Any, request_: dict[str, Any], expected: int
) -> None:
    status = _post(_app(override), **request_)
    assert status == expected, (status, ran)
    assert (ran != []) == (expected == 200), ran


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b'{"note": "n", "count": "7"}', 400), (b'{"note": "n", "count": 7}', 200)],
    ids=["string-read-as-int", "int"],
)
def test_an_overriding_dependency_s_body_member_is_the_one_checked(body: bytes, expected: int) -> None:
    status = _post(_app(body_member, body=True), body=body, constraint=None)
    assert status == expected, (status, ran)
    assert ran == (["7"] if expected == 200 else [])


def test_removing_an_override_restores_the_declared_dependency() -> None:
    app = _app(typed_query)
    assert _post(app, "count=%2B7", constraint=None) == 400
    app.dependency_overrides.clear()  # ``declared`` runs again: nothing reads ``count`` typed
    assert _post(app, "count=%2B7", constraint=None) == 200
    assert ran == ["/workspace/default"]
    app.dependency_overrides[declared] = typed_query  # and an override set again is seen again
    assert _post(app, "count=%2B7", constraint=None) == 400
    assert ran == []


class _Item(BaseModel):
    name: str


def test_an_override_s_lone_embedded_member_is_compared_as_a_member() -> None:
    # The declared route reads one model as the whole body (FastAPI does not embed it); the
    # override's one embedded field is a member of that body (an outside review: it was
    # compared with the whole body, and a correct request refused).
    app = FastAPI()

    @app.post("/write")
    @tool("srv-files", "write")
    async def write(item: _Item, target: Annotated[str, Depends(declared)]) -> dict[str, Any]:
        ran.append(target)
        return {}

    FastAPIChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    app.dependency_overrides[declared] = body_member
    assert _post(app, body=b'{"name": "n", "count": 7}', constraint=None) == 200
    assert ran == ["7"]
    assert _post(app, body=b'{"name": "n", "count": "7"}', constraint=None) == 400
    assert ran == []
