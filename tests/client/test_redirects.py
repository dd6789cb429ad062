"""Finding 10: the agent client never takes Chio credentials to another origin.

Two real HTTP servers on 127.0.0.1, on different ports (so different origins): the first
answers some paths with a redirect to the second, or to itself; both record every request
and its headers. httpx (sync and async) and requests must send ``X-Chio-Capability``,
``X-Chio-DPoP`` and ``X-Chio-Execution-Nonce`` only to the origin they signed for (the rule
httpx and requests apply to ``Authorization``), and never sign a proof for the other one,
not even to answer its 428 nonce challenge.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import requests

from chio_middleware.client import ChioAuth, ChioRequestsAuth, RequestSigningError
from chio_middleware.core.clock import FixedClock
from chio_middleware.core.encoding import decode_header_object, encode_header_object
from chio_middleware.core.models import NonceBinding
from chio_middleware.core.nonce import mint_execution_nonce
from tests.client.server import AGENT, KERNEL, NOW, make_capability

CHIO = ("x-chio-capability", "x-chio-dpop", "x-chio-execution-nonce")


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]

    def chio(self) -> dict[str, str]:
        return {k: v for k, v in self.headers.items() if k in CHIO}


def _challenge() -> str:
    binding = NonceBinding(
        subject_id=AGENT.public_key.hex,
        capability_id="cap-1",
        tool_server="notes",
        tool_name="write",
        parameter_hash="0" * 64,
    )
    return encode_header_object(mint_execution_nonce(KERNEL, binding=binding, now=NOW).to_wire())


@dataclass
class Server:
    """Records requests; ``redirects`` maps a path to (status, Location)."""

    redirects: dict[str, tuple[int, str]] = field(default_factory=dict)
    challenge_paths: set[str] = field(default_factory=set)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                path = self.path
                server.seen.append(
                    Seen(self.command, path, {k.lower(): v for k, v in self.headers.items()})
                )
                if path in server.redirects:
                    status, location = server.redirects[path]
                    self.send_response(status)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 428 if path in server.challenge_paths else 200
                payload = json.dumps({"path": path}).encode()
                self.send_response(status)
                if status == 428:
                    self.send_header("X-Chio-Execution-Nonce", _challenge())
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture(scope="module")
def _running() -> Iterator[tuple[Server, Server]]:
    first, second = Server(), Server()
    running = []
    for server in (first, second):
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), server.handler())
        server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        running.append((httpd, thread))
    assert first.url != second.url
    for status in (301, 302, 303, 307, 308):
        first.redirects[f"/away/{status}"] = (status, f"{second.url}/landing")
        first.redirects[f"/here/{status}"] = (status, "/landing")
    first.redirects["/away/relative-scheme"] = (307, "//" + second.url.split("//", 1)[1] + "/x")
    second.challenge_paths.add("/challenge")
    first.redirects["/away/challenge"] = (307, f"{second.url}/challenge")
    yield first, second
    for httpd, thread in running:  # shutdown waits at most one poll interval
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def servers(_running: tuple[Server, Server]) -> tuple[Server, Server]:
    for server in _running:
        server.seen.clear()
    return _running


def _options() -> dict[str, Any]:
    return {
        "capability": make_capability(),
        "agent_key": AGENT,
        "tool_server": "notes",
        "tool_name": "write",
        "clock": FixedClock(NOW),
    }


def _assert_away(first: Server, second: Server) -> None:
    assert len(first.seen) == 1 and set(first.seen[0].chio()) >= set(CHIO[:2])
    assert second.seen, "the redirect was not followed"
    for seen in second.seen:
        assert seen.chio() == {}, f"{seen.path} got {sorted(seen.chio())}"


REDIRECTS = ["301", "302", "303", "307", "308", "relative-scheme"]


# -- httpx ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", REDIRECTS)
def test_httpx_following_client_with_the_hooks(servers: Any, status: str) -> None:
    first, second = servers
    auth = ChioAuth(**_options())
    with httpx.Client(auth=auth, event_hooks=auth.event_hooks, follow_redirects=True) as client:
        response = client.post(f"{first.url}/away/{status}", json={"a": 1})
    assert response.status_code == 200 and response.history
    _assert_away(first, second)


def test_httpx_default_client_resending_next_request(servers: Any) -> None:
    """httpx's default: the redirect comes back; sending it on through the auth signs nothing."""
    first, second = servers
    with httpx.Client(auth=ChioAuth(**_options())) as client:
        response = client.post(f"{first.url}/away/307", json={"a": 1})
        assert response.status_code == 307 and response.next_request is not None
        assert "x-chio-capability" in response.next_request.headers  # httpx copied it
        final = client.send(response.next_request)
    assert final.status_code == 200
    _assert_away(first, second)


def test_httpx_following_client_without_the_hooks_fails_loudly(servers: Any) -> None:
    first, _ = servers
    with (
        httpx.Client(auth=ChioAuth(**_options()), follow_redirects=True) as client,
        pytest.raises(RequestSigningError, match="event_hooks"),
    ):
        client.post(f"{first.url}/away/307", json={"a": 1})


def test_httpx_same_origin_redirect_keeps_and_resigns(servers: Any) -> None:
    first, _ = servers
    auth = ChioAuth(**_options())
    with httpx.Client(auth=auth) as client:
        response = client.post(f"{first.url}/here/307", json={"a": 1})
        client.send(response.next_request)
    original, redirected = first.seen
    assert redirected.path == "/landing" and set(redirected.chio()) >= set(CHIO[:2])
    # A new proof, made for the request actually sent (same origin only).
    proof = decode_header_object(redirected.headers["x-chio-dpop"])
    assert proof != decode_header_object(original.headers["x-chio-dpop"])
    with httpx.Client(auth=auth, event_hooks=auth.event_hooks, follow_redirects=True) as client:
        client.post(f"{first.url}/here/302", json={"a": 1})
    assert set(first.seen[-1].chio()) >= set(CHIO[:2])  # as httpx keeps Authorization


def test_httpx_never_answers_another_origins_challenge(servers: Any) -> None:
    first, second = servers
    auth = ChioAuth(**_options())
    with httpx.Client(auth=auth, event_hooks=auth.event_hooks, follow_redirects=True) as client:
        response = client.post(f"{first.url}/away/challenge", json={"a": 1})
    assert response.status_code == 428
    assert len(first.seen) == 1 and len(second.seen) == 1  # no retry, no proof for them
    _assert_away(first, second)


@pytest.mark.parametrize("mode", ["hooks", "next_request", "no-hooks"])
def test_httpx_async_client(servers: Any, mode: str) -> None:
    first, second = servers
    auth = ChioAuth(**_options())

    async def run() -> None:
        if mode == "hooks":
            async with httpx.AsyncClient(
                auth=auth, event_hooks=auth.async_event_hooks, follow_redirects=True
            ) as client:
                await client.post(f"{first.url}/away/308", json={"a": 1})
        elif mode == "next_request":
            async with httpx.AsyncClient(auth=auth) as client:
                response = await client.post(f"{first.url}/away/308", json={"a": 1})
                await client.send(response.next_request)
        else:
            async with httpx.AsyncClient(auth=auth, follow_redirects=True) as client:
                with pytest.raises(RequestSigningError):
                    await client.post(f"{first.url}/away/308", json={"a": 1})

    asyncio.run(run())
    if mode != "no-hooks":
        _assert_away(first, second)


# -- requests ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", REDIRECTS)
def test_requests_strips_on_cross_origin_redirects(servers: Any, status: str) -> None:
    first, second = servers
    with requests.Session() as session:
        response = session.post(
            f"{first.url}/away/{status}", json={"a": 1}, auth=ChioRequestsAuth(**_options())
        )
    assert response.status_code == 200 and response.history
    _assert_away(first, second)


def test_requests_without_a_session(servers: Any) -> None:
    first, second = servers
    requests.get(f"{first.url}/away/302", auth=ChioRequestsAuth(**_options()), timeout=10)
    _assert_away(first, second)


def test_requests_same_origin_redirect_keeps_the_headers(servers: Any) -> None:
    first, _ = servers
    requests.post(
        f"{first.url}/here/307", json={"a": 1}, auth=ChioRequestsAuth(**_options()), timeout=10
    )
    assert [s.path for s in first.seen] == ["/here/307", "/landing"]
    assert set(first.seen[1].chio()) >= set(CHIO[:2])  # as requests keeps Authorization


def test_requests_never_answers_another_origins_challenge(servers: Any) -> None:
    first, second = servers
    response = requests.post(
        f"{first.url}/away/challenge",
        json={"a": 1},
        auth=ChioRequestsAuth(**_options()),
        timeout=10,
    )
    assert response.status_code == 428
    assert len(first.seen) == 1 and len(second.seen) == 1
    _assert_away(first, second)


PAIRS = [
    ("http://a.test/x", "http://a.test:80/y"),
    ("http://a.test/x", "https://a.test/y"),  # the upgrade httpx and requests allow
    ("http://a.test:8080/x", "https://a.test/y"),
    ("https://a.test/x", "http://a.test/y"),
    ("http://a.test/x", "http://b.test/y"),
    ("http://a.test/x", "http://A.TEST/y"),
    ("http://a.test/x", "http://a.test:81/y"),
    ("https://a.test/x", "https://a.test:443/y"),
    ("http://127.0.0.1:1/x", "http://localhost:1/y"),
]


@pytest.mark.parametrize(("signed", "target"), PAIRS)
def test_the_origin_rule_is_httpx_and_requests_rule(signed: str, target: str) -> None:
    from httpx._client import _is_https_redirect, _same_origin
    from requests.sessions import SessionRedirectMixin

    from chio_middleware.client.httpx_auth import _origin, keeps_credentials

    old, new = httpx.URL(signed), httpx.URL(target)
    httpx_keeps = _same_origin(new, old) or _is_https_redirect(old, new)
    assert keeps_credentials(_origin(old), new) == httpx_keeps
    assert (not SessionRedirectMixin().should_strip_auth(signed, target)) == httpx_keeps
