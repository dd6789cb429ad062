"""Finding 8: attacker text is echoed in bounded form (errors, receipts, log lines).

A 20 KB duplicate key once gave a 55 KB ``X-Chio-Receipt`` header and a 41 KB log line.
Every error message is now at most ``MAX_MESSAGE_CHARS`` (512) characters with each echoed
value at most ``MAX_ECHO_CHARS`` (64), guard evidence details are bounded the same way, and
request-derived log fields are at most ``MAX_LOG_FIELD_CHARS`` (256) printable characters.
Each case below sends a huge value down one error path and measures what comes back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import structlog

from chio_middleware.core.encoding import decode_header_object, encode_header_object
from chio_middleware.core.errors import (
    MAX_ECHO_CHARS,
    MAX_MESSAGE_CHARS,
    AccessDenied,
    BadRequest,
    bounded,
    echo,
    log_field,
)
from chio_middleware.core.guards import GuardContext
from tests.middleware.harness import Driver, agent_headers, capability, make_driver

HUGE = 20_000
#: A receipt header whose only attacker text is bounded: ~1.3 KB normally, 4 KB at most.
MAX_RECEIPT_HEADER = 4096
#: The largest log event (all fields) any of these requests may produce.
MAX_LOG_EVENT = 2048

NOTE = b'{"title":"t","body":"b"}'
ADAPTERS = ("asgi", "wsgi")


class HugeDetailGuard:
    """Passes, with an evidence detail that quotes a huge argument."""

    name = "HugeDetailGuard"

    def check(self, context: GuardContext) -> str:
        return "saw " + "d" * HUGE


class HugeDenialGuard:
    """Denies with a message that quotes a huge argument."""

    name = "HugeDenialGuard"

    def check(self, context: GuardContext) -> None:
        raise AccessDenied("refused " + "m" * HUGE)


def _dup_key_object(key_length: int) -> str:
    key = "k" * key_length
    return f'{{"{key}":1,"{key}":2}}'


def _dup_in_header(header: str) -> Callable[[Driver], Any]:
    def send(driver: Driver) -> Any:
        headers = agent_headers("POST", "/notes", NOTE)
        wire = decode_header_object(headers[header]) if header in headers else {}
        key = "k" * HUGE  # within the raised header bound, so the JSON is what fails
        text = json.dumps(wire)[:-1] + f', "{key}": 1, "{key}": 2}}'
        if not wire:
            text = "{" + text[2:]
        headers[header] = text
        return driver.request("POST", "/notes", headers, NOTE)

    return send


def _dup_key_body(driver: Driver) -> Any:
    body = _dup_key_object(HUGE).encode()
    return driver.request("POST", "/notes", agent_headers("POST", "/notes", body), body)


def _repeated_query_name(driver: Driver) -> Any:
    name = "q" * HUGE
    return driver.request("GET", f"/notes/1?{name}=1&{name}=2", agent_headers("GET", "/notes/1"))


def _argument_twice(driver: Driver) -> Any:
    name = "a" * HUGE
    url = f"/notes?{name}=1"
    body = json.dumps({"title": "t", "body": "b", name: 2}).encode()
    return driver.request("POST", url, agent_headers("POST", url, body), body)


def _foreign_key_type(driver: Driver) -> Any:
    wire = {**capability().to_wire(), "issuer": "p256:" + "a" * HUGE}
    return driver.request("GET", "/notes", {"x-chio-capability": encode_header_object(wire)})


def _guard_denial(driver: Driver) -> Any:
    return driver.request("POST", "/notes", agent_headers("POST", "/notes", NOTE), NOTE)


CASES: dict[str, tuple[Callable[[Driver], Any], int, dict[str, Any]]] = {
    "duplicate-key-in-body": (_dup_key_body, 400, {}),
    "duplicate-key-in-capability": (_dup_in_header("x-chio-capability"), 400, {}),
    "duplicate-key-in-dpop": (_dup_in_header("x-chio-dpop"), 400, {}),
    "duplicate-key-in-nonce": (_dup_in_header("x-chio-execution-nonce"), 400, {}),
    "repeated-query-name": (_repeated_query_name, 400, {}),
    "argument-given-twice": (_argument_twice, 400, {}),
    "foreign-issuer-key-type": (_foreign_key_type, 401, {}),
    "guard-denial-message": (_guard_denial, 403, {"guards": [HugeDenialGuard()]}),
    "guard-evidence-detail": (_guard_denial, 201, {"guards": [HugeDetailGuard()]}),
}


def _log_sizes(logs: list[dict[str, Any]]) -> list[int]:
    return [len(repr(entry)) for entry in logs]


@pytest.mark.parametrize("kind", ADAPTERS)
@pytest.mark.parametrize("case", list(CASES))
def test_huge_attacker_values_are_echoed_bounded(kind: str, case: str) -> None:
    send, status, options = CASES[case]
    driver = make_driver(kind, max_body_bytes=200_000, max_header_bytes=2**17, **options)
    with structlog.testing.capture_logs() as logs:
        reply = send(driver)
    assert reply.status == status, reply.body[:300]
    receipt = reply.receipt()
    assert len(reply.headers["x-chio-receipt"]) <= MAX_RECEIPT_HEADER
    assert len(reply.body) <= 2 * MAX_MESSAGE_CHARS
    if status >= 400:
        message = reply.json()["message"]
        assert len(message) <= MAX_MESSAGE_CHARS
        assert receipt.verdict.reason == message
    for evidence in receipt.evidence or ():
        assert evidence.details is None or len(evidence.details) <= MAX_MESSAGE_CHARS
    assert logs and max(_log_sizes(logs)) <= MAX_LOG_EVENT


@pytest.mark.parametrize("kind", ADAPTERS)
def test_huge_path_and_tool_names_are_bounded_in_errors_and_logs(kind: str) -> None:
    """The path itself is the receipt's route (PROTOCOL.md 6-7), bounded by the server's
    request-line limit; what is bounded here is every message and log line that echoes it."""
    driver = make_driver(kind)
    tool = "t" * 6000
    url = f"/chio/tools/srv-notes/{tool}"
    narrow = capability([{"server_id": "srv-notes", "tool_name": "read", "operations": ["invoke"]}])
    with structlog.testing.capture_logs() as logs:
        reply = driver.request("POST", url, agent_headers("POST", url, NOTE, cap=narrow), NOTE)
        unbound = driver.request("GET", "/x" + "y" * 6000, {})
        control = driver.request("GET", "/x" + "y" * 6000 + "%0A", {})
    assert reply.status == 403
    message = reply.json()["message"]
    assert len(message) <= MAX_MESSAGE_CHARS and "t" * (MAX_ECHO_CHARS + 1) not in message
    assert unbound.status == 404 and control.status == 400  # PROTOCOL.md 5.1: no controls
    assert max(_log_sizes(logs)) <= MAX_LOG_EVENT
    assert all("\n" not in str(entry.get("route")) for entry in logs)


def test_error_messages_are_bounded_at_construction() -> None:
    error = BadRequest("x" * 10_000 + "\ud800")
    assert len(error.message) == MAX_MESSAGE_CHARS - 32 + len("...(cut 9520 characters)")
    assert len(error.message) <= MAX_MESSAGE_CHARS and error.message.endswith("characters)")
    assert str(error) == error.message
    assert BadRequest("short \ud800 text").message == "short \ufffd text"
    assert json.loads(json.dumps(error.to_body()))["message"] == error.message


def test_echo_log_field_and_bounded() -> None:
    assert echo("abc") == "'abc'"
    quoted = echo("z" * 1000)
    assert len(quoted) == MAX_ECHO_CHARS and quoted.endswith("...")
    assert echo("\ud800\n") == "'\\ud800\\n'"
    assert log_field("/a\nb") == "/a\\nb"
    assert log_field(None) is None
    assert len(log_field("p" * 10_000) or "") <= 256
    assert bounded("ok") == "ok"
