"""The middleware over a store that forgot its state (here: the SQLite file deleted mid-run).

Proofs and nonces issued before the loss was noticed are refused (401 chio_state_forgotten),
so none of the proofs accepted before is accepted again; a capability issued before it
cannot spend its max_invocations budget anew; fresh proofs, nonces and capabilities work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from chio_middleware.stores import open_store

from .harness import NOW, Driver, agent_headers, capability, make_driver
from .test_behaviour import assert_denied

BUDGET = [
    {"server_id": "srv-notes", "tool_name": "*", "operations": ["invoke"], "max_invocations": 2}
]


@pytest.fixture(params=["asgi", "wsgi"])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    driver = make_driver(request.param, store=store)
    driver.path = tmp_path / "state.db"  # type: ignore[attr-defined]
    yield driver
    store.close()


def forget(path: Path) -> None:
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if name.exists():
            os.unlink(name)


def test_nothing_from_before_the_loss_is_accepted_again(driver: Driver) -> None:
    budgeted = capability(BUDGET, cap_id="cap-budget")
    proofs = [agent_headers("GET", "/notes/1") for _ in range(5)]
    assert [driver.request("GET", "/notes/1", h).status for h in proofs] == [200] * 5
    for _ in range(2):
        reply = driver.request("GET", "/notes/1", agent_headers("GET", "/notes/1", cap=budgeted))
        assert reply.status == 200
    assert (
        driver.request("GET", "/notes/1", agent_headers("GET", "/notes/1", cap=budgeted)).status
        == 429
    )
    challenge = driver.request("DELETE", "/notes/1", agent_headers("DELETE", "/notes/1"))
    unused_nonce = challenge.nonce()  # issued before the loss, never used

    forget(driver.path)  # type: ignore[attr-defined]
    driver.clock.advance(5)  # the loss is noticed at NOW + 5

    for headers in proofs:  # replays: the store forgot them, the middleware does not accept
        reply = driver.request("GET", "/notes/1", headers)
        assert_denied(reply, 401, "chio_state_forgotten")
        assert reply.receipt().verdict.guard == "DpopGuard"
    fresh_for_budget = agent_headers("GET", "/notes/1", cap=budgeted, issued_at=NOW + 6)
    reply = driver.request("GET", "/notes/1", fresh_for_budget)
    assert_denied(reply, 401, "chio_state_forgotten")  # its count is lost: not reset to 0
    assert reply.receipt().verdict.guard == "InvocationBudgetGuard"
    reply = driver.request(
        "DELETE",
        "/notes/1",
        agent_headers("DELETE", "/notes/1", nonce=unused_nonce, issued_at=NOW + 6),
    )
    assert_denied(reply, 401, "chio_state_forgotten")
    assert reply.receipt().verdict.guard == "ExecutionNonceGuard"

    driver.clock.advance(1)
    fresh = agent_headers("GET", "/notes/1", issued_at=NOW + 6)
    assert driver.request("GET", "/notes/1", fresh).status == 200
    assert_denied(driver.request("GET", "/notes/1", fresh), 401, "chio_replay_detected")
    new_cap = capability(BUDGET, cap_id="cap-new", issued_at=NOW + 6)
    for _ in range(2):
        headers = agent_headers("GET", "/notes/1", cap=new_cap, issued_at=NOW + 6)
        assert driver.request("GET", "/notes/1", headers).status == 200
    headers = agent_headers("GET", "/notes/1", cap=new_cap, issued_at=NOW + 6)
    assert driver.request("GET", "/notes/1", headers).status == 429
    nonce = driver.request(
        "DELETE", "/notes/1", agent_headers("DELETE", "/notes/1", issued_at=NOW + 6)
    ).nonce()
    headers = agent_headers("DELETE", "/notes/1", nonce=nonce, issued_at=NOW + 6)
    assert driver.request("DELETE", "/notes/1", headers).status == 204
