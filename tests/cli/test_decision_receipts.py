"""``verify`` and ``tail`` on a log with decision receipts (PROTOCOL.md 7.1)."""

from __future__ import annotations

import json
from pathlib import Path

from chio_middleware.core.engine import run_sync
from chio_middleware.core.replay import SyncStoreAsAsync
from chio_middleware.core.request import RequestView
from chio_middleware.sinks.jsonl import JsonlSink
from tests.cli.conftest import run
from tests.middleware.harness import KERNEL, NOW, agent_headers, make_driver

NOTE = b'{"title":"t","body":"b"}'


def _log_with_a_killed_request(path: Path) -> str:
    """Two completed requests and, between them, one whose worker died in the handler."""
    sink = JsonlSink(path)
    driver = make_driver("asgi", sink=sink, receipt_mode="decision")
    assert driver.request("POST", "/notes", agent_headers("POST", "/notes", NOTE), NOTE).status == 201
    runtime = driver.middleware.runtime
    headers = [(k, v.encode()) for k, v in agent_headers("POST", "/notes", NOTE).items()]
    view = RequestView(method="POST", path="/notes", query={}, headers=headers, body=NOTE)
    evaluation = runtime.engine.start(view)
    run_sync(runtime.engine.evaluate(evaluation, SyncStoreAsAsync(driver.store)))
    runtime.admit(evaluation)  # the decision receipt is recorded; the app then never returns
    assert evaluation.error is None and evaluation.decision_receipt is not None
    assert driver.request("GET", "/health").status == 200
    sink.close()
    return evaluation.decision_receipt.id


def test_verify_names_decisions_without_final_and_the_chain_still_verifies(tmp_path: Path) -> None:
    log = tmp_path / "receipts.jsonl"
    killed = _log_with_a_killed_request(log)
    result = run("verify", str(log), "--kernel-key", KERNEL.public_key.hex)
    assert result.status == 0, result.out
    lines = result.out.splitlines()
    assert lines[0] == f"{log}: OK: 1 file(s), 5 line(s), 5 receipt(s), seq 1-5"
    assert "  receipt scopes: decision 3, final 2" in lines
    assert "  1 decision receipt(s) without a final receipt (not a chain problem):" in lines
    assert any(line.startswith(f"    {log}:3: decision receipt {killed} (POST /notes") for line in lines)
    document = json.loads(run("verify", str(log), "--json").out)
    assert document["ok"] is True
    assert [d["line"] for d in document["decisions_without_final"]] == [3]


def test_tail_marks_decision_receipts_and_filters_by_scope(tmp_path: Path) -> None:
    log = tmp_path / "receipts.jsonl"
    killed = _log_with_a_killed_request(log)
    shown = run("tail", str(log), "-n", "all").out.splitlines()
    assert len(shown) == 5
    assert sum(" DECISION " in line for line in shown) == 3  # every allowed request has one
    only = run("tail", str(log), "--filter", "scope=decision", "-n", "all").out.splitlines()
    assert len(only) == 3 and only[1].endswith(f"id={killed}")
    finals = run("tail", str(log), "--filter", "scope=final,method=POST", "-n", "all").out
    assert len(finals.splitlines()) == 1


def test_tail_filters_by_error_code(tmp_path: Path) -> None:
    log = tmp_path / "receipts.jsonl"
    sink = JsonlSink(log)
    driver = make_driver("wsgi", sink=sink)
    headers = agent_headers("POST", "/notes", NOTE, issued_at=NOW)
    assert driver.request("POST", "/notes", headers, NOTE).status == 201
    assert driver.request("POST", "/notes", headers, NOTE).status == 401
    assert driver.request("POST", "/notes", {}, NOTE).status == 401
    sink.close()
    replays = run("tail", str(log), "--filter", "code=chio_replay_detected").out.splitlines()
    assert len(replays) == 3 and "guard=ReplayGuard" in replays[0]
    assert "replay=#1 before" in replays[0]
    assert replays[1] == "most replayed slots among the receipts shown (1 of 1):"


def _log_with_replays(path: Path) -> None:
    """One proof sent 10 times, another 3 times, through the middleware into a log."""
    sink = JsonlSink(path)
    driver = make_driver("wsgi", sink=sink)
    for times in (10, 3):
        headers = agent_headers("POST", "/notes", NOTE, issued_at=NOW)
        for _ in range(times):
            driver.request("POST", "/notes", headers, NOTE)
    sink.close()


def test_verify_summarises_the_most_replayed_slots(tmp_path: Path) -> None:
    log = tmp_path / "receipts.jsonl"
    _log_with_replays(log)
    result = run("verify", str(log), "--kernel-key", KERNEL.public_key.hex)
    assert result.status == 0, result.out
    lines = result.out.splitlines()
    at = lines.index("  most replayed slots (2 of 2, replays refused, not a chain problem):")
    first, second = lines[at + 1], lines[at + 2]
    assert first.startswith("    dpop_proof slot ") and "presented 10 time(s)" in first
    assert "9 replay denial(s) seen; POST /notes; capability cap-1" in first
    assert "presented 3 time(s)" in second and "2 replay denial(s)" in second
    document = json.loads(run("verify", str(log), "--json").out)
    assert [s["presentations"] for s in document["replayed_slots"]] == [10, 3]


def test_tail_shows_replay_counts_and_the_most_replayed_slots(tmp_path: Path) -> None:
    log = tmp_path / "receipts.jsonl"
    _log_with_replays(log)
    out = run("tail", str(log), "--filter", "code=chio_replay_detected", "-n", "all").out
    lines = out.splitlines()
    receipts = [line for line in lines if "DENY" in line]
    assert len(receipts) == 11
    assert [int(line.split("replay=#")[1].split()[0]) for line in receipts] == [
        *range(1, 10),
        1,
        2,
    ]
    assert lines[11] == "most replayed slots among the receipts shown (2 of 2):"
    assert "presented 10 time(s)" in lines[12] and "presented 3 time(s)" in lines[13]
