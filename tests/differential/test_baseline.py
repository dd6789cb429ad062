"""Legitimate calls reach their handlers on every framework, with what was checked.

Without this the property could hold because everything is refused. Each tool's honest
call must be answered 2xx by its handler, which read the values the middleware checked.
"""

from __future__ import annotations

import json

import pytest

from .apps import FRAMEWORKS
from .cases import FORM, JSON, describe, run, target, tool
from .spec import SYNTHETIC_TOOL, attacker_grants, capability, synthetic_grant
from .wire import Wire, sign

FORM_BODY = (b"path=%2Fworkspace%2Fa.txt&note=hello+world", FORM)
JSON_BODY = (json.dumps({"path": "/workspace/a.txt", "note": "hello"}).encode(), JSON)

HONEST: dict[str, tuple[str, str, tuple[bytes, tuple[str, bytes]] | None]] = {
    "file_get": ("GET", "/files/get?path=/workspace/a.txt&ref=r", None),
    "file_read": ("POST", "/files/read?ref=r", JSON_BODY),
    "file_form": ("POST", "/files/form?ref=r", (b"path=%2Fworkspace%2Fa.txt", FORM)),
    "file_body": ("POST", "/files/body?ref=r", JSON_BODY),
    "blob_get": ("GET", "/blobs/workspace/a.txt", None),
    "item_get": ("GET", "/items/7", None),
    "report_list": ("GET", "/reports/?ref=r", None),
    "note_read": ("GET", "/cbv/7?ref=r", None),
    "note_write": ("POST", "/cbv/7", JSON_BODY),
    "mounted_get": ("GET", "/api/v1/files/a.txt?ref=r", None),
}


def _wire(method: str, target_: str, body: tuple[bytes, tuple[str, bytes]] | None) -> Wire:
    if body is None:
        return Wire(method, target_)
    return Wire(method, target_, (body[1],), body[0])


@pytest.mark.parametrize("kind", FRAMEWORKS)
@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_call_reaches_its_handler(kind: str, name: str) -> None:
    method, url, body = HONEST[name]
    wire = sign(_wire(method, url, body), capability(), tool(name))
    reply, problems = run(kind, wire)
    assert reply.status == 200 and problems == [], describe(kind, wire, reply, problems)
    calls = target(kind).recorder.calls(wire.case)
    checks = target(kind).recorder.checks(wire.case)
    assert [c.tool for c in calls] == [name] and len(checks) == 1
    assert calls[0].reads, "the handler read nothing: the comparison would be empty"


@pytest.mark.parametrize("kind", FRAMEWORKS)
def test_form_or_embedded_body_reaches_request_values(kind: str) -> None:
    body = (b'{"path":"/workspace/a.txt"}', JSON) if kind.startswith("fastapi") else FORM_BODY
    wire = sign(_wire("POST", "/files/values", body), capability(), tool("file_values"))
    reply, problems = run(kind, wire)
    assert reply.status == 200 and problems == [], describe(kind, wire, reply, problems)


@pytest.mark.parametrize("kind", FRAMEWORKS)
def test_delete_runs_after_the_nonce_challenge(kind: str) -> None:
    first = sign(Wire("DELETE", "/notes/7"), capability(), tool("delete_note"))
    challenge, problems = run(kind, first)
    assert challenge.status == 428 and problems == []
    nonce = challenge.header("x-chio-execution-nonce")
    assert nonce is not None
    retry = sign(Wire("DELETE", "/notes/7"), capability(), tool("delete_note"), nonce=nonce)
    reply, problems = run(kind, retry)
    assert reply.status == 200 and problems == [], describe(kind, retry, reply, problems)
    assert [c.tool for c in target(kind).recorder.calls(retry.case)] == ["delete_note"]


@pytest.mark.parametrize("kind", FRAMEWORKS)
def test_unbound_health_needs_no_credentials(kind: str) -> None:
    wire = Wire("GET", "/health")
    reply, problems = run(kind, wire)
    assert reply.status == 200 and problems == [], describe(kind, wire, reply, problems)
    assert [c.tool for c in target(kind).recorder.calls(wire.case)] == [None]


@pytest.mark.parametrize("kind", FRAMEWORKS)
def test_unbound_route_with_a_capability_is_checked_as_the_synthetic_tool(kind: str) -> None:
    # PROTOCOL.md 5.3: the guards run on every request that carries a capability.
    wire = sign(Wire("GET", "/public/echo?path=/workspace/a.txt"), capability(), SYNTHETIC_TOOL)
    reply, problems = run(kind, wire)
    assert reply.status == 200 and problems == [], describe(kind, wire, reply, problems)
    checks = target(kind).recorder.checks(wire.case)
    assert [(c.tool_server, c.tool_name, c.arguments) for c in checks] == [
        (*SYNTHETIC_TOOL, {"path": "/workspace/a.txt"})
    ]


@pytest.mark.parametrize("kind", FRAMEWORKS)
def test_unbound_side_effect_needs_the_synthetic_grant(kind: str) -> None:
    body = json.dumps({"path": "/workspace/a.txt"}).encode()
    narrow = sign(Wire("POST", "/public/echo", (JSON,), body), capability(), SYNTHETIC_TOOL)
    reply, problems = run(kind, narrow)
    assert reply.status == 403 and problems == [], describe(kind, narrow, reply, problems)
    broad = capability(grants=[*attacker_grants(), synthetic_grant()])
    wire = sign(Wire("POST", "/public/echo", (JSON,), body), broad, SYNTHETIC_TOOL)
    reply, problems = run(kind, wire)
    assert reply.status == 200 and problems == [], describe(kind, wire, reply, problems)
    assert [c.reads for c in target(kind).recorder.calls(wire.case)] == [
        [("path", "/workspace/a.txt")]
    ]


@pytest.mark.parametrize("kind", ["starlette", "flask", "starlette-declared", "flask-declared"])
def test_head_on_a_class_based_endpoint_is_checked_as_its_get(kind: str) -> None:
    wire = sign(Wire("HEAD", "/cbv/7"), capability(), tool("note_read"))
    reply, problems = run(kind, wire)
    assert reply.status == 200 and problems == [], describe(kind, wire, reply, problems)
    assert [c.tool for c in target(kind).recorder.calls(wire.case)] == ["note_read"]
