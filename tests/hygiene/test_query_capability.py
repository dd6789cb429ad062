"""Finding 10 (second half): the capability in the URL query is opt-in.

PROTOCOL.md 1.3 defines the capability header; the upstream SDKs' ``?chio_capability=``
fallback puts a credential in the query string, which access logs, proxies and browser
histories record. It is accepted only with ``capability_query_param=True``; otherwise the
parameter is refused (400, the message says why), never passed on as an argument.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from chio_middleware import ChioSettings
from chio_middleware.core.encoding import encode_header_object
from tests.middleware.harness import agent_headers, capability, make_driver

ADAPTERS = ("asgi", "wsgi")


def _query_url(path: str = "/notes/1") -> str:
    return f"{path}?chio_capability={quote(encode_header_object(capability().to_wire()))}"


def _without_header(url: str) -> dict[str, str]:
    headers = agent_headers("GET", url)
    del headers["x-chio-capability"]
    return headers


@pytest.mark.parametrize("kind", ADAPTERS)
def test_query_capability_is_refused_by_default(kind: str) -> None:
    driver = make_driver(kind)
    url = _query_url()
    for headers in (_without_header(url), agent_headers("GET", url)):
        reply = driver.request("GET", url, headers)
        assert reply.status == 400, reply.body
        body = reply.json()
        assert body["error"] == "chio_bad_request"
        assert "access logs" in body["message"] and "capability_query_param" in body["message"]
        assert reply.receipt().capability_id is None  # never verified, never used


@pytest.mark.parametrize("kind", ADAPTERS)
def test_query_capability_is_refused_on_unbound_routes_too(kind: str) -> None:
    """Without the setting the parameter is no argument to pass through to the app either."""
    reply = make_driver(kind).request("GET", "/health?chio_capability=x", {})
    assert reply.status == 400 and reply.json()["error"] == "chio_bad_request"


@pytest.mark.parametrize("kind", ADAPTERS)
def test_query_capability_when_enabled(kind: str) -> None:
    driver = make_driver(kind, capability_query_param=True)
    url = _query_url()
    reply = driver.request("GET", url, _without_header(url))
    assert reply.status == 200, reply.body
    assert reply.receipt().capability_id == "cap-1"
    both = driver.request("GET", url, agent_headers("GET", url))
    assert both.status == 400 and both.json()["error"] == "chio_bad_request"
    assert "both" in both.json()["message"]


def test_setting_defaults_off_and_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ChioSettings().capability_query_param is False
    monkeypatch.setenv("CHIO_CAPABILITY_QUERY_PARAM", "true")
    assert ChioSettings().capability_query_param is True


def test_setting_enters_the_policy_hash() -> None:
    off = make_driver("asgi").middleware.runtime.engine.policy_hash
    on = make_driver("asgi", capability_query_param=True).middleware.runtime.engine.policy_hash
    assert off != on
