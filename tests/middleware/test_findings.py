"""Regression tests of the outside review's findings 1-3, through both adapters.

The grant allows ``file_read`` only under ``/workspace/``; each request carries a valid
capability and a DPoP proof for its exact bytes, as an attacker holding that narrow
capability would send. Every case must be refused: before the fix each reached the echo
handler with ``/etc/shadow`` (or ran an unbound side effect).
"""

from __future__ import annotations

import codecs
import json

import pytest

from .harness import Driver, agent_headers, capability
from .test_behaviour import NOTE, assert_denied

GRANT = [
    {
        "server_id": "srv-files",
        "tool_name": "file_read",
        "operations": ["invoke"],
        "constraints": [{"type": "path_prefix", "value": "/workspace/"}],
    }
]
URL = "/files/read?ref=/workspace/ok"  # a harmless argument that satisfies path_prefix

LENIENT_JSON = [
    b'{"path":"/workspace/a","path":"/etc/shadow"}',
    b'{"path":"/etc/shadow","n":NaN}',
    b'{"path":"/etc/shadow","n":1e400}',
    codecs.BOM_UTF8 + b'{"path":"/etc/shadow"}',
    json.dumps({"path": "/etc/shadow"}).encode("utf-16"),
    json.dumps({"path": "/etc/shadow"}).encode("utf-32-le"),
]
CONTENT_TYPES = [None, "text/plain", "application/json\xa0", "application/json\x85",
                 *(f"application/json{chr(c)}" for c in range(0x1C, 0x20))]


def send(driver: Driver, body: bytes, content_type: str | None, url: str = URL) -> object:
    headers = agent_headers("POST", url, body, cap=capability(GRANT), json_body=False)
    pairs: list[tuple[str, object]] = list(headers.items())
    if content_type is not None:  # httpx takes non-ASCII header values as bytes only
        value = content_type.encode("latin-1") if driver.kind == "asgi" else content_type
        pairs.append(("content-type", value))
    return driver.request("POST", url, pairs, body)  # type: ignore[arg-type]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
@pytest.mark.parametrize("body", LENIENT_JSON)
def test_finding_1_lenient_only_json_is_refused(driver: Driver, body: bytes, content_type: str | None) -> None:
    assert_denied(send(driver, body, content_type), 400, "chio_bad_request")  # type: ignore[arg-type]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_finding_1_json_with_trimmed_content_type_is_checked(driver: Driver, content_type: str | None) -> None:
    assert_denied(send(driver, b'{"path":"/etc/shadow"}', content_type), 403, "chio_access_denied")  # type: ignore[arg-type]
    allowed = send(driver, b'{"path":"/workspace/a"}', content_type)
    assert allowed.status == 200  # type: ignore[attr-defined]


def test_finding_1_json_declared_as_form_is_refused(driver: Driver) -> None:
    body = b'{"a":"&b=/workspace/","path":"/etc/passwd"}'
    assert_denied(send(driver, body, "application/x-www-form-urlencoded"), 400, "chio_bad_request")  # type: ignore[arg-type]
    # Starlette's test client re-encodes U+00A0 as UTF-8 (C2 A0), which no framework trims:
    # then the body is read as JSON and its path checked; either way it is refused.
    reply = send(driver, body, "application/x-www-form-urlencoded\xa0")
    assert reply.status in (400, 403), reply.body  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'[{"path":"/etc/passwd"}]', "application/json"),
        (b'"/etc/passwd"', "application/json"),
        (b"--b\r\nContent-Disposition: form-data; name=path\r\n\r\n/etc/passwd\r\n--b--\r\n",
         "multipart/form-data; boundary=b"),
        (b"/etc/passwd", "text/plain"),
    ],
)
def test_finding_1_bodies_constraints_cannot_see_are_denied(driver: Driver, body: bytes, content_type: str) -> None:
    reply = send(driver, body, content_type)
    assert_denied(reply, 403, "chio_access_denied")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "url"),
    [("GET", "//files/get?path=/etc/passwd"), ("DELETE", "//notes/7"), ("POST", "//admin/purge"),
     ("POST", "/files/%2e%2e/files/read"), ("POST", "/files%2Fread"), ("POST", "/files/read%5c")],
)
def test_finding_2_non_canonical_paths_are_refused_before_routing(driver: Driver, method: str, url: str) -> None:
    # An absolute URL: the test clients would read "//files/get" as a host name.
    # (Raw dot segments are covered with hand-built scopes in tests/differential.)
    assert_denied(driver.request(method, "http://localhost" + url), 400, "chio_bad_request")


def test_finding_3_unbound_side_effects_need_a_grant_and_run_guards(driver: Driver) -> None:
    empty = capability([])
    url = "/unbound"
    reply = driver.request("POST", url, agent_headers("POST", url, NOTE, cap=empty, tool=("a", "b")), NOTE)
    assert_denied(reply, 403, "chio_access_denied")
    assert "chio_http_authority" in reply.json()["message"]
