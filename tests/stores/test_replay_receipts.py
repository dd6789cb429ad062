"""A replayed proof, end to end: the deny receipts count the presentations before each."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from chio_middleware.core.encoding import decode_header_object
from chio_middleware.core.receipts import receipt_json
from chio_middleware.core.replay import ReplayStore
from tests.middleware.harness import NOW, agent_headers, make_driver

from .conftest import BACKENDS

NOTE = json.dumps({"title": "t", "body": "b"}).encode()


@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_proof_sent_ten_times_counts_one_to_nine_prior_presentations(
    backend: str, adapter: str, opened: Callable[..., ReplayStore]
) -> None:
    driver = make_driver(adapter, store=opened(backend))
    headers = agent_headers("POST", "/notes", NOTE)
    replies = [driver.request("POST", "/notes", headers, NOTE) for _ in range(10)]
    assert [r.status for r in replies] == [201] + [401] * 9
    receipts = driver.sink.receipts
    observed = [(r.metadata or {}).get("chio_replay") for r in receipts[1:]]
    assert [o["prior_presentations"] for o in observed] == list(range(1, 10))
    assert {o["first_used_at"] for o in observed} == {NOW}
    assert {o["kind"] for o in observed} == {"dpop_proof"}
    assert len({o["slot"] for o in observed}) == 1
    nonce = decode_header_object(headers["x-chio-dpop"])["body"]["nonce"]
    assert all(nonce.encode() not in receipt_json(r) for r in receipts)  # a hash names the slot
    for index, receipt in enumerate(receipts[1:], start=1):
        assert (receipt.metadata or {})["chio_error_code"] == "chio_replay_detected"
        evidence = (receipt.evidence or [])[-1]
        assert evidence.guard_name == "ReplayGuard" and not evidence.verdict
        assert evidence.details == (
            f"this proof or nonce was already used: presented {index} time(s) before, "
            f"first used at {NOW}"
        )
    # the response tells the client nothing more than before
    assert replies[1].json()["message"] == "this proof or nonce was already used"
