"""Outside review (2026-12-01, second): FastAPI typed parameters wherever they are declared.

FastAPI hands the handler what pydantic makes of the text (``amount: float`` from
``"1e9"``, ``confirm: bool`` from ``"yes"``); the middleware refuses a text that is not the
canonical form of that value. The review found the check skipping parameters declared in
a dependency and the fields of a ``Query()`` model. The table below declares each typed
parameter in every place FastAPI reads one from, and sends canonical and non-canonical
texts; a non-canonical one must be refused before the handler runs.
"""

import datetime
import decimal
import uuid
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel
from starlette.testclient import TestClient

from chio_middleware.core.clock import FixedClock
from chio_middleware.integrations import tool
from chio_middleware.integrations.fastapi import Chio as FastAPIChio

from ..middleware.harness import NOW, agent_headers, capability, settings

ran: list[Any] = []

#: type, canonical texts (the handler reads exactly that), texts pydantic rewrites.
TYPES: dict[str, tuple[Any, list[str], list[str]]] = {
    "int": (int, ["7", "-3"], ["+7", " 7", "07", "7.0"]),
    "float": (float, ["1.5", "1000000000", "-0.25"], ["1e9", "1.50", "1.0", " 2", "+1.5"]),
    "bool": (bool, ["true", "false"], ["yes", "on", "1", "True"]),
    "Decimal": (decimal.Decimal, ["1.5"], ["1e9", " 1.5"]),
    "UUID": (
        uuid.UUID,
        ["00000000-2222-4333-8444-555555555555"],
        ["00000000222243338444555555555555", "00000000-2222-4333-8444-55555555555A"],
    ),
    "date": (datetime.date, ["2026-12-01"], []),
    "datetime": (
        datetime.datetime,
        ["2026-12-01T10:00:00+00:00", "2026-12-01T10:00:00Z"],
        ["1764583200"],  # pydantic reads a Unix time; the text checked says otherwise
    ),
    "str": (str, ["anything at all"], []),
}


def _app(placement: str, annotation: Any) -> FastAPI:
    app = FastAPI()

    if placement == "route":

        @app.get("/pay")
        @tool("srv-pay", "pay")
        async def on_route(amount: Annotated[annotation, Query()]) -> dict[str, Any]:
            ran.append(amount)
            return {"ok": True}

    elif placement in ("dependency", "sub-dependency"):

        def leaf(amount: Annotated[annotation, Query()]) -> Any:
            return amount

        def middle(amount: Annotated[Any, Depends(leaf)]) -> Any:
            return amount

        dependency = leaf if placement == "dependency" else middle

        @app.get("/pay")
        @tool("srv-pay", "pay")
        async def in_dependency(amount: Annotated[Any, Depends(dependency)]) -> dict[str, Any]:
            ran.append(amount)
            return {"ok": True}

    else:

        class Transfer(BaseModel):
            amount: annotation

        @app.get("/pay")
        @tool("srv-pay", "pay")
        async def in_model(transfer: Annotated[Transfer, Query()]) -> dict[str, Any]:
            ran.append(transfer.amount)
            return {"ok": True}

    FastAPIChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    return app


PLACEMENTS = ["route", "dependency", "sub-dependency", "Query() model"]
GRANTS = [{"server_id": "srv-pay", "tool_name": "pay", "operations": ["invoke"]}]


def _get(client: TestClient, query: str) -> int:
    url = f"/pay?{query}"
    headers = agent_headers("GET", url, cap=capability(GRANTS), tool=("srv-pay", "pay"))
    return client.get(url, headers=headers).status_code


def _cases() -> list[Any]:
    cases = []
    for placement in PLACEMENTS:
        for name, (_, canonical, rewritten) in TYPES.items():
            cases += [pytest.param(placement, name, t, True, id=f"{placement}-{name}-ok-{t}") for t in canonical]
            cases += [pytest.param(placement, name, t, False, id=f"{placement}-{name}-{t}") for t in rewritten]
    return cases


@pytest.mark.parametrize(("placement", "kind", "text", "canonical"), _cases())
def test_a_typed_parameter_reads_as_the_text_checked_or_is_refused(
    placement: str, kind: str, text: str, canonical: bool
) -> None:
    from urllib.parse import quote

    ran.clear()
    annotation = TYPES[kind][0]
    client = TestClient(_app(placement, annotation), raise_server_exceptions=False)
    status = _get(client, f"amount={quote(text)}")
    if canonical:
        assert status == 200, status
        assert len(ran) == 1 and _reads_as(ran[0], text)
    else:
        assert status == 400, (status, ran)
        assert ran == []


def _reads_as(value: Any, text: str) -> bool:
    if isinstance(value, bool):
        return text == ("true" if value else "false")
    if isinstance(value, float):
        return float(text) == value
    if isinstance(value, datetime.date):
        return type(value).fromisoformat(text) == value
    return str(value) == text


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_a_typed_list_reads_as_the_texts_checked_or_is_refused(placement: str) -> None:
    # A repeated query key is refused before any of this (400): one item per list here.
    ran.clear()
    client = TestClient(_app(placement, list[int]), raise_server_exceptions=False)
    assert _get(client, "amount=1") == 200
    assert ran == [[1]]
    ran.clear()
    assert _get(client, "amount=%2B1") == 400
    assert ran == []


@pytest.mark.parametrize(
    ("annotation", "text"),
    [
        (set[str], "a"),
        (datetime.timedelta, "PT1H"),
        (float, "1e9"),
        (bool, "yes"),
    ],
)
def test_where_nothing_checks_the_arguments_nothing_is_refused(annotation: Any, text: str) -> None:
    from chio_middleware.integrations import public

    ran.clear()
    app = FastAPI()

    @app.get("/pay")
    @public
    async def open_route(amount: Annotated[annotation, Query()]) -> dict[str, Any]:
        ran.append(amount)
        return {"ok": True}

    FastAPIChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    client = TestClient(app, raise_server_exceptions=False)
    assert client.get("/pay", params={"amount": text}).status_code == 200  # no credential
    assert len(ran) == 1


def test_a_dependency_tree_past_what_the_resolver_walks_is_refused() -> None:
    import inspect

    from fastapi import Header

    def leaf() -> int:
        return 1

    def fan_out(child: Any, count: int) -> Any:
        def dependency(**_: Any) -> int:
            return 1

        kind = inspect.Parameter.KEYWORD_ONLY
        dependency.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(f"d{i}", kind, default=Depends(child)) for i in range(count)]
        )
        return dependency

    heavy = fan_out(fan_out(leaf, 40), 40)  # FastAPI makes a node per use: 1,641 of them
    app = FastAPI()

    @app.get("/pay")
    @tool("srv-pay", "pay")
    async def pay(
        _: Annotated[Any, Depends(heavy)], x_target: Annotated[str, Header()] = ""
    ) -> dict[str, Any]:
        ran.append(x_target)
        return {"ok": True}

    FastAPIChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    ran.clear()
    client = TestClient(app, raise_server_exceptions=False)
    url = "/pay"
    headers = agent_headers("GET", url, cap=capability(GRANTS), tool=("srv-pay", "pay"))
    response = client.get(url, headers={**headers, "x-target": "/etc/passwd"})
    assert response.status_code == 403, response.text
    assert "cannot inspect" in response.json()["message"]
    assert ran == []
