"""Outside review (2026-12-01, second): typed members of a FastAPI body.

pydantic in lax mode reads a body member ``"1e9"`` as the float 1e9 and ``"yes"`` as
``True``; the constraints saw the JSON value (or the form's text). A body member the
handler reads as another value than the one checked is now refused (400) wherever a
constraint or an argument-reading guard applies. The table sends each kind of JSON value
to each typed member, in a body model, in embedded ``Body()`` parameters and in ``Form()``
fields, and records what the handler read.
"""

import json
from typing import Annotated, Any

import pytest
from fastapi import Body, FastAPI, Form
from pydantic import BaseModel
from starlette.testclient import TestClient

from chio_middleware.core.clock import FixedClock
from chio_middleware.integrations import tool
from chio_middleware.integrations.fastapi import Chio as FastAPIChio

from ..middleware.harness import NOW, agent_headers, capability, settings

ran: list[Any] = []
GRANTS = [{"server_id": "srv-pay", "tool_name": "pay", "operations": ["invoke"]}]


class Payment(BaseModel):
    amount: float
    confirm: bool = False
    count: int = 1


def _app(shape: str) -> FastAPI:
    app = FastAPI()
    route = app.post("/pay")
    if shape == "model":

        async def pay(payment: Payment) -> Any:
            ran.append(payment.model_dump())
            return {"ok": True}

    elif shape == "embedded":

        async def pay(  # type: ignore[misc]
            amount: Annotated[float, Body()],
            confirm: Annotated[bool, Body()] = False,
            count: Annotated[int, Body()] = 1,
        ) -> Any:
            ran.append({"amount": amount, "confirm": confirm, "count": count})
            return {"ok": True}

    else:

        async def pay(  # type: ignore[misc]
            amount: Annotated[float, Form()],
            confirm: Annotated[bool, Form()] = False,
            count: Annotated[int, Form()] = 1,
        ) -> Any:
            ran.append({"amount": amount, "confirm": confirm, "count": count})
            return {"ok": True}

    route(tool("srv-pay", "pay")(pay))
    FastAPIChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    return app


JSON_CASES = [  # members, admitted (the handler reads exactly them)
    ({"amount": 1000000000}, True),
    ({"amount": 1.5, "confirm": True, "count": 7}, True),
    ({"amount": "1e9"}, False),
    ({"amount": "1.5"}, False),
    ({"amount": 1, "confirm": "yes"}, False),
    ({"amount": 1, "confirm": 1}, False),
    ({"amount": 1, "count": "7"}, False),
    ({"amount": 1, "count": 7.0}, False),
]
FORM_CASES = [
    ("amount=1000000000", True),
    ("amount=1.5&confirm=true&count=7", True),
    ("amount=1e9", False),
    ("amount=1&confirm=yes", False),
    ("amount=1&count=%2B7", False),
]


def _post(client: TestClient, body: bytes, content_type: str) -> int:
    url = "/pay"
    headers = agent_headers(
        "POST", url, body, cap=capability(GRANTS), tool=("srv-pay", "pay"), json_body=False
    )
    headers["content-type"] = content_type
    return client.post(url, content=body, headers=headers).status_code


@pytest.mark.parametrize("shape", ["model", "embedded"])
@pytest.mark.parametrize(("members", "admitted"), JSON_CASES, ids=[json.dumps(m) for m, _ in JSON_CASES])
def test_a_json_body_member_reads_as_the_value_checked_or_is_refused(
    shape: str, members: dict[str, Any], admitted: bool
) -> None:
    ran.clear()
    client = TestClient(_app(shape), raise_server_exceptions=False)
    status = _post(client, json.dumps(members).encode(), "application/json")
    if admitted:
        assert status == 200, status
        assert all(ran[0][k] == v for k, v in members.items())
    else:
        assert status == 400, (status, ran)
        assert ran == []


@pytest.mark.parametrize(("text", "admitted"), FORM_CASES, ids=[t for t, _ in FORM_CASES])
def test_a_form_field_reads_as_the_text_checked_or_is_refused(text: str, admitted: bool) -> None:
    ran.clear()
    client = TestClient(_app("form"), raise_server_exceptions=False)
    status = _post(client, text.encode(), "application/x-www-form-urlencoded")
    assert status == (200 if admitted else 400), (status, ran)
    assert (ran != []) == admitted


# -- the shapes a third review found the check missing, and ones it must still admit -------


def _shapes_app() -> FastAPI:
    import dataclasses
    import decimal

    from fastapi import Depends
    from pydantic import AliasChoices, Field

    class ValidationAlias(BaseModel):
        amount: float = Field(validation_alias="amt")

    class Choices(BaseModel):
        amount: float = Field(validation_alias=AliasChoices("amount", "amt"))

    class Plain(BaseModel):
        amount: float

    @dataclasses.dataclass
    class Target:
        path: str

    class Price(BaseModel):
        price: decimal.Decimal

    class Tags(BaseModel):
        tags: set[str]

    def scalar_dependency(amount: Annotated[float, Body(embed=True)]) -> float:
        return amount

    def model_dependency(o: Plain) -> Any:
        return o.amount

    app = FastAPI()

    def route(path: str) -> Any:
        return lambda f: app.post(path)(tool("srv-pay", "pay")(f))

    @route("/validation_alias")
    async def r1(o: ValidationAlias) -> Any:
        ran.append(o.amount)

    @route("/alias_choices")
    async def r2(o: Choices) -> Any:
        ran.append(o.amount)

    @route("/body_validation_alias")
    async def r3(amount: Annotated[float, Body(embed=True, validation_alias="amt")]) -> Any:
        ran.append(amount)

    @route("/body_in_dependency")
    async def r4(a: Annotated[float, Depends(scalar_dependency)]) -> Any:
        ran.append(a)

    @route("/model_in_dependency")
    async def r5(a: Annotated[float, Depends(model_dependency)]) -> Any:
        ran.append(a)

    @route("/form_model")
    async def r6(o: Annotated[Plain, Form()]) -> Any:
        ran.append(o.amount)

    @route("/form_list")
    async def r7(amount: Annotated[list[float], Form()]) -> Any:
        ran.append(amount)

    @route("/dataclass")
    async def r8(target: Target) -> Any:
        ran.append(target.path)

    @route("/decimal")
    async def r9(price: Price) -> Any:
        ran.append(price.price)

    @route("/set")
    async def r10(tags: Tags) -> Any:
        ran.append(tags.tags)

    FastAPIChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    return app


J, F = "application/json", "application/x-www-form-urlencoded"
SHAPES = [  # path, body, Content-Type, admitted
    ("/validation_alias", {"amt": "1e9"}, J, False),
    ("/validation_alias", {"amt": 1.5}, J, True),
    ("/alias_choices", {"amt": "1e9"}, J, False),
    ("/alias_choices", {"amt": 1.5}, J, True),
    ("/body_validation_alias", {"amt": "1e9"}, J, False),
    ("/body_in_dependency", {"amount": "1e9"}, J, False),
    ("/body_in_dependency", {"amount": 1.5}, J, True),
    ("/model_in_dependency", {"amount": "1e9"}, J, False),
    ("/form_model", b"amount=1e9", F, False),
    ("/form_model", b"amount=1.5", F, True),
    ("/form_list", b"amount=1e9", F, False),
    ("/form_list", b"amount=1.5", F, True),
    ("/dataclass", {"path": "/workspace/a"}, J, True),
    ("/decimal", {"price": 1.5}, J, True),
    ("/decimal", {"price": "1.5"}, J, True),
    ("/decimal", {"price": "1e9"}, J, False),
    ("/set", {"tags": ["a", "b"]}, J, True),
]


@pytest.mark.parametrize(
    ("path", "body", "content_type", "admitted"), SHAPES, ids=[f"{p}-{b!r}" for p, b, _, _ in SHAPES]
)
def test_every_body_shape_reads_as_checked_or_is_refused(
    path: str, body: Any, content_type: str, admitted: bool
) -> None:
    ran.clear()
    client = TestClient(_shapes_app(), raise_server_exceptions=False)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    url = path
    headers = agent_headers(
        "POST", url, data, cap=capability(GRANTS), tool=("srv-pay", "pay"), json_body=False
    )
    headers["content-type"] = content_type
    status = client.post(url, content=data, headers=headers).status_code
    assert status == (200 if admitted else 400), (status, ran)
    assert (ran != []) == admitted
