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
    "float": (float, ["1.5", "1000000000"], ["1e9", "1.50", " 2"]),
    "bool": (bool, ["true", "false"], ["yes", "on", "1", "True"]),
    "Decimal": (decimal.Decimal, ["1.5"], ["1e9", " 1.5"]),
    "UUID": (
        uuid.UUID,
        ["00000000-2222-4333-8444-555555555555"],
        ["00000000222243338444555555555555", "00000000-2222-4333-8444-55555555555A"],
    ),
    "date": (datetime.date, ["2026-12-01"], []),
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
        assert len(ran) == 1 and _text(ran[0]) == text
    else:
        assert status == 400, (status, ran)
        assert ran == []


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


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
