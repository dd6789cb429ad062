"""Decision receipts (PROTOCOL.md 7.1): recorded before the app runs, linked by the final."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chio_middleware.core.models import HttpReceipt
from chio_middleware.core.receipts import receipt_json, verify_receipt
from chio_middleware.sinks import MemorySink, SignReceipt, SinkError

from .harness import KERNEL, Driver, agent_headers, make_driver

ADAPTERS = ["asgi", "wsgi"]
NOTE = json.dumps({"title": "t", "body": "b"}).encode()


class FailingDecisionSink(MemorySink):
    """Records nothing at all, while ``ready()`` says it is fine: the worst case."""

    def record(self, sign: SignReceipt) -> HttpReceipt:
        raise SinkError("disk on fire")



@pytest.fixture(params=ADAPTERS)
def driver(request: pytest.FixtureRequest) -> Driver:
    return make_driver(request.param, receipt_mode="decision")


def _scope(receipt: HttpReceipt) -> Any:
    return (receipt.metadata or {}).get("chio_http_status_scope")


def test_allowed_request_gets_a_decision_then_a_linked_final_receipt(driver: Driver) -> None:
    reply = driver.request("POST", "/notes", agent_headers("POST", "/notes", NOTE), NOTE)
    assert reply.status == 201
    decision, final = driver.sink.receipts
    verify_receipt(decision, trusted_keys=[KERNEL.public_key])
    assert _scope(decision) == "decision" and decision.response_status == 200
    assert decision.verdict.verdict == "allow"
    assert decision.request_id == final.request_id and decision.id != final.id
    assert final.metadata == {
        "chio_http_status_scope": "final",
        "chio_decision_receipt_id": decision.id,
        "chio_tool_server": "srv-notes",
        "chio_tool_name": "write_note",
    }
    # the response carries the final receipt, not the decision receipt
    assert receipt_json(reply.receipt()) == receipt_json(final)


def test_a_denial_has_only_a_final_receipt(driver: Driver) -> None:
    reply = driver.request("POST", "/notes", {}, NOTE)
    assert reply.status == 401
    (receipt,) = driver.sink.receipts
    assert _scope(receipt) == "final" and "chio_decision_receipt_id" not in (receipt.metadata or {})
    assert (receipt.metadata or {})["chio_error_code"] == "chio_capability_required"


def test_an_app_crash_still_links_the_final_500(driver: Driver) -> None:
    reply = driver.request("GET", "/crash")
    assert reply.status == 500
    decision, final = driver.sink.receipts
    assert _scope(decision) == "decision"
    assert final.response_status == 500
    assert (final.metadata or {})["chio_decision_receipt_id"] == decision.id


@pytest.mark.parametrize("kind", ADAPTERS)
def test_a_sink_that_cannot_record_the_decision_refuses_before_the_app(kind: str) -> None:
    sink = FailingDecisionSink()
    driver = make_driver(kind, sink=sink, receipt_mode="decision")
    app_calls: list[str] = []
    middleware = driver.middleware
    inner = middleware.app

    if kind == "asgi":

        async def counting_asgi(scope: Any, receive: Any, send: Any) -> None:
            app_calls.append(scope.get("path", ""))
            await inner(scope, receive, send)

        middleware.app = counting_asgi
    else:

        def counting_wsgi(environ: Any, start_response: Any) -> Any:
            app_calls.append(environ.get("PATH_INFO", ""))
            return inner(environ, start_response)

        middleware.app = counting_wsgi
    reply = driver.request("POST", "/notes", agent_headers("POST", "/notes", NOTE), NOTE)
    assert reply.status == 503
    assert reply.json()["error"] == "chio_unavailable"
    assert app_calls == []  # refused before the application ran: no side effect


@pytest.mark.parametrize("kind", ADAPTERS)
def test_final_mode_is_the_default_and_signs_one_receipt(kind: str) -> None:
    driver = make_driver(kind)
    assert driver.request("GET", "/health").status == 200
    (receipt,) = driver.sink.receipts
    assert _scope(receipt) == "final"
