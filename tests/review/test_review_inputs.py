"""Outside review (2026-12-01, third): FastAPI inputs read under one name, or by rules the
check did not follow.

Each case runs the real FastAPI app and records what the handler (or its dependency) read:
- two parameters of one name (a ``Header()`` in one dependency and a ``Cookie()`` in
  another, two headers under different aliases) left one value unchecked; now differing values are refused where checks apply;
- a body member read by another of its ``AliasChoices`` than the first was not compared;
- a dependant's lone embedded ``Body()`` field was compared with the whole body;
- a dependency added to a route in place after its first request was not seen (the route's
  facts were kept);
- an override declared as a tool did not count as a declaration.
"""

import json
from typing import Annotated, Any

import pytest
from fastapi import Body, Cookie, Depends, FastAPI, Form, Header
from fastapi.dependencies.utils import get_parameterless_sub_dependant
from pydantic import AliasChoices, BaseModel
from starlette.testclient import TestClient

from chio_middleware.core.clock import FixedClock
from chio_middleware.integrations import public, tool
from chio_middleware.integrations.fastapi import Chio as FastAPIChio

from ..middleware.harness import NOW, agent_headers, capability, settings

ran: list[Any] = []
SHORT = {"type": "max_length", "value": 12}
LONG = "/etc/" + "x" * 40


def _post(
    app: FastAPI,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    form: bool = False,
    constraint: dict[str, Any] | None = None,
    credentials: bool = True,
) -> int:
    grant: dict[str, Any] = {"server_id": "srv-files", "tool_name": "write", "operations": ["invoke"]}
    if constraint is not None:
        grant["constraints"] = [constraint]
    sent = {}
    if credentials:
        sent = agent_headers(
            "POST", url, body, cap=capability([grant]), tool=("srv-files", "write"), json_body=not form
        )
    if form:
        sent["content-type"] = "application/x-www-form-urlencoded"
    sent.update(headers or {})
    ran.clear()
    client = TestClient(app, raise_server_exceptions=False)
    return int(client.post(url, headers=sent, content=body).status_code)


def _protect(app: FastAPI) -> FastAPI:
    FastAPIChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    return app


# -- one name, two inputs -------------------------------------------------------------------


def header_a(target: Annotated[str, Header(alias="x-a")]) -> str:
    return target


def header_b(target: Annotated[str, Header(alias="x-b")]) -> str:
    return target


def header_target(target: Annotated[str, Header()]) -> str:
    return target


def cookie_target(target: Annotated[str, Cookie()]) -> str:
    return target


def _collisions_app() -> FastAPI:
    app = FastAPI()

    @app.post("/headers")
    @tool("srv-files", "write")
    async def two_headers(
        one: Annotated[str, Depends(header_a)], two: Annotated[str, Depends(header_b)]
    ) -> dict[str, Any]:
        ran.append((one, two))
        return {}

    @app.post("/header-cookie")
    @tool("srv-files", "write")
    async def header_and_cookie(
        one: Annotated[str, Depends(header_target)], two: Annotated[str, Depends(cookie_target)]
    ) -> dict[str, Any]:
        ran.append((one, two))
        return {}

    return _protect(app)


#: url, headers; each sends LONG in one input and "ok" in the other, then "ok" in both.
COLLISIONS = [
    pytest.param("/headers", {"x-a": "ok", "x-b": LONG}, id="header-then-header"),
    pytest.param("/headers", {"x-a": LONG, "x-b": "ok"}, id="header-before-header"),
    pytest.param("/header-cookie", {"target": LONG, "cookie": "target=ok"}, id="header-cookie"),
    pytest.param("/header-cookie", {"target": "ok", "cookie": f"target={LONG}"}, id="cookie-header"),
]


@pytest.mark.parametrize(("url", "headers"), COLLISIONS)
def test_two_inputs_of_one_name_are_both_checked_or_refused(url: str, headers: dict[str, str]) -> None:
    app = _collisions_app()
    status = _post(app, url, headers=headers, constraint=SHORT)
    assert status in (400, 403), (status, ran)  # the two differ (400), or the kept one is long
    assert ran == []
    same = {k: ("target=ok" if k == "cookie" else "ok") for k in headers}
    assert _post(app, url, headers=same, constraint=SHORT) == 200
    assert ran == [("ok", "ok")]


# -- the body's members, as request_body_to_args reads them ---------------------------------


class Item(BaseModel):
    name: str


class Settings(BaseModel):
    count: int


def embedded_count(count: Annotated[int, Body(embed=True)]) -> int:
    return count


def embedded_model(cfg: Annotated[Settings, Body(embed=True)]) -> int:
    return cfg.count


def same_name(item: Annotated[Settings, Body(embed=True)]) -> int:
    return item.count


def _body_app() -> FastAPI:
    app = FastAPI()

    @app.post("/embedded")
    @tool("srv-files", "write")
    async def lone_embedded(item: Item, count: Annotated[int, Depends(embedded_count)]) -> dict[str, Any]:
        ran.append(count)
        return {}

    @app.post("/embedded-model")
    @tool("srv-files", "write")
    async def lone_model(item: Item, count: Annotated[int, Depends(embedded_model)]) -> dict[str, Any]:
        ran.append(count)
        return {}

    @app.post("/same-name")
    @tool("srv-files", "write")
    async def same_name_route(item: Item, count: Annotated[int, Depends(same_name)]) -> dict[str, Any]:
        ran.append(count)
        return {}

    choices = AliasChoices("count", "n")

    @app.post("/choices")
    @tool("srv-files", "write")
    async def json_choices(
        note: Annotated[str, Body(embed=True)],
        count: Annotated[int, Body(embed=True, validation_alias=choices)],
    ) -> dict[str, Any]:
        ran.append(count)
        return {}

    @app.post("/form-choices")
    @tool("srv-files", "write")
    async def form_choices(count: Annotated[int, Form(validation_alias=choices)]) -> dict[str, Any]:
        ran.append(count)
        return {}

    return _protect(app)


#: url, body, form, whether the handler reads the value sent (else 400)
BODIES = [
    # two body parameters of different names: FastAPI embeds both
    pytest.param("/embedded", {"item": {"name": "n"}, "count": 7}, False, True, id="embedded-int"),
    pytest.param("/embedded", {"item": {"name": "n"}, "count": "7"}, False, False, id="embedded-string"),
    pytest.param("/embedded-model", {"item": {"name": "n"}, "cfg": {"count": 7}}, False, True, id="model-int"),
    pytest.param(
        "/embedded-model", {"item": {"name": "n"}, "cfg": {"count": "7"}}, False, False, id="model-string"
    ),
    # one name: the route's ``item`` is the whole body, the dependency's ``item`` a member
    pytest.param("/same-name", {"name": "n", "item": {"count": 7}}, False, True, id="same-name-int"),
    pytest.param("/same-name", {"name": "n", "item": {"count": "7"}}, False, False, id="same-name-string"),
    pytest.param("/choices", {"note": "x", "n": 7}, False, True, id="second-choice-int"),
    pytest.param("/choices", {"note": "x", "n": "7"}, False, False, id="second-choice-string"),
    pytest.param("/choices", {"note": "x", "count": "7"}, False, False, id="first-choice-string"),
    pytest.param("/form-choices", "n=7", True, True, id="form-second-choice"),
    pytest.param("/form-choices", "n=%2B7", True, False, id="form-second-choice-plus"),
    pytest.param("/form-choices", "count=%2B7", True, False, id="form-first-choice-plus"),
]


@pytest.mark.parametrize(("url", "body", "form", "read_as_sent"), BODIES)
def test_each_body_member_is_compared_where_fastapi_reads_it(
    url: str, body: Any, form: bool, read_as_sent: bool
) -> None:
    sent = body.encode() if form else json.dumps(body).encode()
    status = _post(_body_app(), url, body=sent, form=form)
    if read_as_sent:
        assert (status, ran) == (200, [7])
    else:
        assert status == 400, (status, ran)
        assert ran == []


# -- a tree edited in place, a declaration in an override -----------------------------------


def test_a_dependency_added_in_place_after_the_first_request_is_checked() -> None:
    read: list[str] = []

    def audit(x_target: Annotated[str, Header()]) -> None:
        read.append(x_target)

    app = FastAPI()

    @app.post("/write")
    @tool("srv-files", "write")
    async def write() -> dict[str, Any]:
        ran.append("ran")
        return {}

    _protect(app)
    assert _post(app, "/write", headers={"x-target": LONG}, constraint=SHORT) == 200
    route = next(r for r in app.routes if getattr(r, "path", "") == "/write")
    route.dependant.dependencies.append(  # type: ignore[attr-defined]
        get_parameterless_sub_dependant(depends=Depends(audit), path="/write")
    )
    assert _post(app, "/write", headers={"x-target": LONG}, constraint=SHORT) == 403
    assert read == [] and ran == []
    assert _post(app, "/write", headers={"x-target": "/ok"}, constraint=SHORT) == 200
    assert read == ["/ok"]


@tool("srv-files", "write")
def writer() -> str:
    return "written"


@pytest.mark.parametrize(
    "public_on", ["dependency", "endpoint"], ids=["public-by-dependency", "public-endpoint"]
)
def test_an_override_declared_as_a_tool_is_a_declaration(public_on: str) -> None:
    # A route public through its dependency, or by its endpoint's own mark, whose dependency
    # is overridden by a declared tool: a public route and a tool, refused.
    def reader() -> str:  # made here: ``public`` marks the function itself
        return "read"

    app = FastAPI()
    dependency = public(reader) if public_on == "dependency" else reader

    async def open_route(done: Annotated[str, Depends(dependency)]) -> dict[str, Any]:
        ran.append(done)
        return {}

    app.post("/open")(public(open_route) if public_on == "endpoint" else open_route)
    _protect(app)
    assert _post(app, "/open", credentials=False) == 200
    app.dependency_overrides[dependency] = writer
    status = _post(app, "/open", credentials=False)
    assert status == 403, (status, ran)
    assert ran == []


# -- the second review of the same day: shapes the comparison must follow -------------------


class Count(BaseModel):
    count: int


def _shapes_app() -> FastAPI:
    import pydantic
    from pydantic import Field, RootModel

    @pydantic.dataclasses.dataclass
    class Aliased:
        count: int = Field(alias="n")

    app = FastAPI()

    @app.post("/root")
    @tool("srv-files", "write")
    async def root_model(r: RootModel[dict[str, int]]) -> dict[str, Any]:
        ran.append(r.root["a"])
        return {}

    @app.post("/dataclass")
    @tool("srv-files", "write")
    async def aliased_dataclass(d: Aliased) -> dict[str, Any]:
        ran.append(d.count)
        return {}

    @app.post("/optional-form-model")
    @tool("srv-files", "write")
    async def optional_form_model(
        note: Annotated[str, Form()], m: Annotated[Count | None, Form()] = None
    ) -> dict[str, Any]:
        ran.append(m.count if m is not None else note)
        return {}

    return _protect(app)


SHAPES = [
    pytest.param("/root", '{"a": 7}', False, 7, id="root-model-int"),
    pytest.param("/root", '{"a": "7"}', False, None, id="root-model-string"),
    pytest.param("/dataclass", '{"n": 7}', False, 7, id="dataclass-alias-int"),
    pytest.param("/dataclass", '{"n": "7"}', False, None, id="dataclass-alias-string"),
    pytest.param("/optional-form-model", "note=x", True, "x", id="form-model-not-sent"),
    pytest.param("/optional-form-model", "note=x&count=7", True, 7, id="form-model-sent"),
    pytest.param("/optional-form-model", "note=x&count=%2B7", True, None, id="form-model-plus"),
]


@pytest.mark.parametrize(("url", "body", "form", "read"), SHAPES)
def test_each_shape_is_compared_as_fastapi_reads_it(url: str, body: str, form: bool, read: Any) -> None:
    status = _post(_shapes_app(), url, body=body.encode(), form=form)
    if read is None:
        assert status == 400, (status, ran)
        assert ran == []
    else:
        assert (status, ran) == (200, [read])


def flag_bool(flag: Annotated[bool, Header(alias="x-a")]) -> bool:
    return flag


def flag_int(flag: Annotated[int, Header(alias="x-b")]) -> int:
    return flag


def targets(target: Annotated[list[str], Header()]) -> list[str]:
    return target


def test_inputs_of_one_name_differ_by_type_or_agree_as_one_item_list() -> None:
    app = FastAPI()

    @app.post("/flags")
    @tool("srv-files", "write")
    async def flags(a: Annotated[bool, Depends(flag_bool)], b: Annotated[int, Depends(flag_int)]) -> dict[str, Any]:
        ran.append((a, b))
        return {}

    @app.post("/lists")
    @tool("srv-files", "write")
    async def lists(
        a: Annotated[list[str], Depends(targets)], b: Annotated[str, Depends(header_b)]
    ) -> dict[str, Any]:
        ran.append((a, b))
        return {}

    _protect(app)
    assert _post(app, "/flags", headers={"x-a": "1", "x-b": "1"}) == 400  # True and 1
    assert ran == []
    assert _post(app, "/lists", headers={"target": "ok", "x-b": "ok"}) == 200  # ["ok"] and "ok"
    assert ran == [(["ok"], "ok")]
