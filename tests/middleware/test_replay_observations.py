"""An execution nonce replayed with fresh proofs: its slot is counted like a proof's."""

from __future__ import annotations

import pytest

from .harness import NOW, agent_headers, make_driver


@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
def test_a_replayed_execution_nonce_is_observed(adapter: str) -> None:
    driver = make_driver(adapter)
    challenge = driver.request("DELETE", "/notes/1", agent_headers("DELETE", "/notes/1"))
    nonce = challenge.nonce()
    replies = [
        driver.request("DELETE", "/notes/1", agent_headers("DELETE", "/notes/1", nonce=nonce))
        for _ in range(4)
    ]
    assert [r.status for r in replies] == [204, 401, 401, 401]
    observed = [(r.receipt().metadata or {})["chio_replay"] for r in replies[1:]]
    assert [o["prior_presentations"] for o in observed] == [1, 2, 3]
    assert {(o["kind"], o["first_used_at"]) for o in observed} == {("execution_nonce", NOW)}
