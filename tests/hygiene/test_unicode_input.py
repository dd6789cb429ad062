"""Finding 8: a lone surrogate wherever attacker text enters is 400, never 503 or an ERROR.

A ``\\ud800`` JSON escape parses (Python's ``json`` keeps it) into a string with no UTF-8
form, which canonical JSON, hashes, receipts and stores cannot take. The strict parser now
refuses it at the boundary, so every wire object is valid Unicode. The table below is
generated: every string member and every member name of a real capability, DPoP proof and
execution nonce, in both header forms (raw JSON and base64url), plus body, form, query and
path inputs, each on both adapters. A baseline row without the surrogate must succeed, so
the 400s are the surrogate's doing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import structlog

from chio_middleware.asgi import ChioMiddleware
from chio_middleware.core.canonical import JsonParseError, parse_json
from chio_middleware.core.encoding import b64url_encode, decode_header_object, encode_header_object
from chio_middleware.core.errors import MalformedHeader
from chio_middleware.core.hashing import body_hash, request_binding_hash
from chio_middleware.core.models import NonceBinding
from chio_middleware.core.nonce import mint_execution_nonce
from chio_middleware.sinks import MemorySink
from tests.middleware.harness import (
    AGENT,
    KERNEL,
    NOW,
    Driver,
    agent_headers,
    capability,
    make_driver,
    settings,
    starlette_app,
)

LONE = "\ud800"
NOTE = b'{"title":"t","body":"b"}'

Path = tuple[Any, ...]


def _leaves(obj: Any, path: Path = ()) -> Iterator[tuple[str, Path]]:
    """("value", path) for every string leaf and ("key", path) for every member name."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield "key", (*path, key)
            yield from _leaves(value, (*path, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _leaves(value, (*path, index))
    elif isinstance(obj, str):
        yield "value", path


def _poisoned(obj: Any, kind: str, path: Path) -> Any:
    """A deep copy of ``obj`` with a lone surrogate in the string or member name at ``path``."""
    copy = json.loads(json.dumps(obj))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if kind == "key":
        parent[last + LONE] = parent.pop(last)
    else:
        parent[last] = parent[last][:4] + LONE + parent[last][4:]
    return copy


def _header_forms(obj: Any) -> dict[str, str]:
    text = json.dumps(obj)  # ensure_ascii: the surrogate travels as the escape \ud800
    assert "\\ud800" in text
    return {"json": text, "b64": b64url_encode(text.encode("ascii"))}


def _nonce_for_delete() -> dict[str, Any]:
    cap = capability()
    binding = NonceBinding(
        subject_id=AGENT.public_key.hex,
        capability_id=cap.id,
        tool_server="srv-notes",
        tool_name="delete_note",
        parameter_hash=request_binding_hash("DELETE", "/notes/1", {}, body_hash(b"")),
    )
    return mint_execution_nonce(KERNEL, binding=binding, now=NOW).to_wire()


CAPABILITY_WIRE = capability().to_wire()
PROOF_WIRE = decode_header_object(agent_headers("POST", "/notes", NOTE)["x-chio-dpop"])
NONCE_WIRE = _nonce_for_delete()


def _header_cases() -> Iterator[Any]:
    sources = (
        ("capability", "x-chio-capability", CAPABILITY_WIRE, "POST", "/notes"),
        ("dpop", "x-chio-dpop", PROOF_WIRE, "POST", "/notes"),
        ("nonce", "x-chio-execution-nonce", NONCE_WIRE, "DELETE", "/notes/1"),
    )
    for label, header, wire, method, url in sources:
        for kind, path in _leaves(wire):
            poisoned = _poisoned(wire, kind, path)
            for form, value in _header_forms(poisoned).items():
                name = f"{label}-{kind}-{'.'.join(map(str, path))}-{form}"
                yield pytest.param(header, value, method, url, id=name)
        # A member the model does not know, named by a lone surrogate.
        extra = {**wire, f"x{LONE}": 1}
        for form, value in _header_forms(extra).items():
            yield pytest.param(header, value, method, url, id=f"{label}-extra-member-{form}")


ADAPTERS = ("asgi", "wsgi")


@pytest.fixture(params=ADAPTERS)
def driver(request: pytest.FixtureRequest) -> Driver:
    return make_driver(request.param)


def _assert_bad_request(reply: Any, logs: list[dict[str, Any]]) -> None:
    assert reply.status == 400, reply.body
    body = reply.json()
    assert body["error"] == "chio_bad_request" and body["status"] == 400
    receipt = reply.receipt()  # the denial is still receipted (and the receipt encodes)
    assert receipt.verdict.verdict == "deny" and receipt.response_status == 400
    errors = [entry for entry in logs if entry["log_level"] in ("error", "critical")]
    assert errors == []


def _send(driver: Driver, method: str, url: str, headers: dict[str, str], body: bytes) -> Any:
    with structlog.testing.capture_logs() as logs:
        reply = driver.request(method, url, headers, body)
    return reply, logs


def _valid_headers(method: str, url: str, body: bytes) -> dict[str, str]:
    headers = agent_headers(method, url, body)
    if method == "DELETE":
        headers["x-chio-execution-nonce"] = encode_header_object(NONCE_WIRE)
    return headers


@pytest.mark.parametrize(("method", "url"), [("POST", "/notes"), ("DELETE", "/notes/1")])
def test_baseline_without_surrogate_is_allowed(driver: Driver, method: str, url: str) -> None:
    body = NOTE if method == "POST" else b""
    reply, _ = _send(driver, method, url, _valid_headers(method, url, body), body)
    assert reply.status in (201, 204), reply.body


@pytest.mark.parametrize(("header", "value", "method", "url"), list(_header_cases()))
def test_lone_surrogate_in_a_chio_header(
    driver: Driver, header: str, value: str, method: str, url: str
) -> None:
    body = NOTE if method == "POST" else b""
    headers = _valid_headers(method, url, body)
    headers[header] = value
    reply, logs = _send(driver, method, url, headers, body)
    _assert_bad_request(reply, logs)


def test_lone_surrogate_in_a_capability_needs_no_valid_signature(driver: Driver) -> None:
    forged = {**CAPABILITY_WIRE, "id": LONE, "signature": "00" * 64}
    headers = {"x-chio-capability": json.dumps(forged)}
    reply, logs = _send(driver, "GET", "/notes", headers, b"")
    _assert_bad_request(reply, logs)


def test_raw_surrogate_bytes_in_a_header_are_not_utf8() -> None:
    raw = json.dumps(CAPABILITY_WIRE).encode().replace(b'"cap-1"', b'"cap-\xed\xa0\x80"')
    status, error, logs = _raw_asgi("/notes", [(b"x-chio-capability", raw)])
    assert (status, error) == (400, "chio_bad_request")
    assert not [e for e in logs if e["log_level"] == "error"]


BODIES = {
    "value": b'{"title":"\\ud800","body":"b"}',
    "key": b'{"title":"t","body":"b","\\udc00":1}',
    "nested": b'{"title":"t","body":"b","tags":[{"x":["\\udbff"]}]}',
    "high-then-letter": b'{"title":"\\ud800\\u0041","body":"b"}',
    "pair-reversed": b'{"title":"\\udc00\\ud800","body":"b"}',
    "uppercase-escape": b'{"title":"\\uD800","body":"b"}',
}


MEDIA = [
    "application/json",
    "application/merge-patch+json",
    "text/plain",  # frameworks parse JSON whatever the Content-Type says
    "application/x-www-form-urlencoded",
    None,
]


@pytest.mark.parametrize("media", MEDIA, ids=[m or "no-content-type" for m in MEDIA])
@pytest.mark.parametrize("body", list(BODIES.values()), ids=list(BODIES))
def test_lone_surrogate_in_a_json_body(driver: Driver, body: bytes, media: str | None) -> None:
    headers = agent_headers("POST", "/notes", body, json_body=False)
    if media is not None:
        headers["content-type"] = media
    reply, logs = _send(driver, "POST", "/notes", headers, body)
    _assert_bad_request(reply, logs)


def test_a_valid_surrogate_pair_is_accepted(driver: Driver) -> None:
    body = b'{"title":"\\ud83d\\ude00","body":"b"}'
    reply, _ = _send(driver, "POST", "/notes", agent_headers("POST", "/notes", body), body)
    assert reply.status == 201, reply.body
    assert reply.json()["title"] == "\U0001f600"


def test_lone_surrogate_in_a_form_body(driver: Driver) -> None:
    body = b"title=%ED%A0%80&body=b"
    headers = agent_headers("POST", "/notes", body, json_body=False)
    headers["content-type"] = "application/x-www-form-urlencoded"
    reply, logs = _send(driver, "POST", "/notes", headers, body)
    _assert_bad_request(reply, logs)


@pytest.mark.parametrize("query", ["q=%ED%A0%80", "%ED%B0%80=1", "q=%ed%a0%80%ed%b0%80"])
def test_lone_surrogate_in_a_query_parameter(driver: Driver, query: str) -> None:
    url = f"/notes/1?{query}"
    headers = agent_headers("GET", "/notes/1")
    reply, logs = _send(driver, "GET", url, headers, b"")
    _assert_bad_request(reply, logs)


@pytest.mark.parametrize("url", ["/notes/%ED%A0%80", "/unbound%ED%B0%80"])
def test_encoded_surrogate_in_the_path(driver: Driver, url: str) -> None:
    reply, logs = _send(driver, "GET", url, {}, b"")
    _assert_bad_request(reply, logs)


def test_surrogate_in_a_query_capability(driver: Driver) -> None:
    on = make_driver(driver.kind, capability_query_param=True)
    token = quote(json.dumps({**CAPABILITY_WIRE, "id": LONE}))
    reply, logs = _send(on, "GET", f"/notes?chio_capability={token}", {}, b"")
    _assert_bad_request(reply, logs)


def _raw_asgi(
    path: str, headers: list[tuple[bytes, bytes]]
) -> tuple[int, str, list[dict[str, Any]]]:
    """One request through the ASGI adapter with a scope built by hand (no client)."""
    from chio_middleware.core.clock import FixedClock

    sink = MemorySink()
    app = ChioMiddleware(starlette_app(), settings=settings(), clock=FixedClock(NOW), sink=sink)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": b"",
        "headers": headers,
        "root_path": "",
    }
    with structlog.testing.capture_logs() as logs:
        asyncio.run(app(scope, receive, send))
    assert len(sink.receipts) == 1  # refused, and the refusal receipted
    return sent[0]["status"], json.loads(sent[1]["body"])["error"], logs


@pytest.mark.parametrize("path", ["/unbound\udcff", "/notes/\udcff"], ids=["path", "param"])
def test_surrogate_path_from_an_asgi_server(path: str) -> None:
    """A server that decodes the path with surrogateescape hands the app a lone surrogate."""
    status, error, logs = _raw_asgi(path, [])
    assert (status, error) == (400, "chio_bad_request")
    assert not [e for e in logs if e["log_level"] == "error"]


def test_parse_json_refuses_lone_surrogates_and_keeps_pairs() -> None:
    for text in ('"\\ud800"', '{"\\udfff":1}', '["a","\\ud800\\ud800"]', '"\ud800"'):
        with pytest.raises(JsonParseError, match="surrogate"):
            parse_json(text)
    assert parse_json(b'["\\ud83d\\ude00", "\\\\ud800"]') == ["\U0001f600", "\\ud800"]
    with pytest.raises(MalformedHeader):
        decode_header_object('{"id":"\\ud800"}')
