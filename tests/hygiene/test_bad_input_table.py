"""Bad input of every kind gets its 4xx (PROTOCOL.md 8): never a 5xx, never an ERROR line.

A generated table: every member (and the whole object) of a real capability, DPoP proof and
execution nonce replaced by a value of each wrong JSON type or extreme size, or removed,
sent on both adapters. Whatever the verdict (400, 401, 428...), it is a client error with a
receipt, and nothing is logged at ERROR (an ERROR is for the operator: a bug or an outage).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from tests.hygiene.test_unicode_input import (
    CAPABILITY_WIRE,
    NONCE_WIRE,
    NOTE,
    PROOF_WIRE,
    _valid_headers,
)
from tests.middleware.harness import Driver, make_driver

_REMOVE = object()
VALUES: dict[str, Any] = {
    "null": None,
    "true": True,
    "negative": -1,
    "u64-overflow": 2**64,
    "huge-int": 10**400,
    "float": 1.5,
    "empty": "",
    "long": "x" * 4000,
    "list": ["a"],
    "object": {"a": 1},
    "removed": _REMOVE,
}


def _paths(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, (*path, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _paths(value, (*path, index))


def _mutated(wire: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(wire))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    if value is _REMOVE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return copy


def _cases() -> Iterator[Any]:
    sources = (
        ("capability", "x-chio-capability", CAPABILITY_WIRE, "POST", "/notes"),
        ("dpop", "x-chio-dpop", PROOF_WIRE, "POST", "/notes"),
        ("nonce", "x-chio-execution-nonce", NONCE_WIRE, "DELETE", "/notes/1"),
    )
    for label, header, wire, method, url in sources:
        for path in _paths(wire):
            for name, value in VALUES.items():
                if not path and value is _REMOVE:
                    continue
                text = json.dumps(_mutated(wire, path, value))
                where = ".".join(map(str, path)) or "whole"
                yield pytest.param(header, text, method, url, id=f"{label}-{where}-{name}")


@pytest.fixture(scope="module", params=["asgi", "wsgi"])
def driver(request: pytest.FixtureRequest) -> Driver:
    return make_driver(request.param)


@pytest.mark.parametrize(("header", "value", "method", "url"), list(_cases()))
def test_malformed_chio_header_is_a_client_error(
    driver: Driver, header: str, value: str, method: str, url: str
) -> None:
    body = NOTE if method == "POST" else b""
    headers = _valid_headers(method, url, body)
    headers[header] = value
    with structlog.testing.capture_logs() as logs:
        reply = driver.request(method, url, headers, body)
    # A member the verifier ignores (an optional one removed) may still pass: never a 5xx.
    assert reply.status < 500, reply.body
    if reply.status >= 400:
        assert reply.json()["status"] == reply.status
    reply.receipt()
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]
