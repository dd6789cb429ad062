from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chio_middleware.client import (
    ChioAuth,
    ReceiptVerificationError,
    RequestSigningError,
    verified_receipt,
)
from chio_middleware.core.clock import FixedClock
from chio_middleware.core.encoding import decode_header_object, encode_header_object
from chio_middleware.core.models import HttpReceipt
from tests.client.server import AGENT, KERNEL, NOW, STRANGER, FakeToolServer, make_capability


def auth(**overrides: Any) -> ChioAuth:
    options: dict[str, Any] = {
        "capability": make_capability(),
        "agent_key": AGENT,
        "tool_server": "notes",
        "tool_name": "write",
        "clock": FixedClock(NOW),
    }
    options.update(overrides)
    return ChioAuth(**options)


def test_post_with_query_and_json_body_is_verified_by_the_server() -> None:
    server = FakeToolServer()
    with server.httpx_client(auth()) as client:
        response = client.post(
            "/notes/caf%C3%A9 menu",
            params={"tag": "a b&c=d", "empty": "", "sym": "€+%"},
            json={"title": "hi", "body": "x"},
        )
    assert response.status_code == 200, server.received[-1].error
    (seen,) = server.received
    assert "%" in seen.target  # the server decoded percent-encoding itself
    assert seen.dpop is not None
    assert seen.dpop["body"]["issued_at"] == NOW
    assert seen.dpop["body"]["tool_server"] == "notes"
    assert decode_header_object(seen.header("X-Chio-Capability") or "")["id"] == "cap-1"


@pytest.mark.parametrize("form", ["model", "dict", "json", "json-bytes", "base64url"])
def test_capability_as_model_dict_json_or_header_value_and_key_as_hex(form: str) -> None:
    token = make_capability()
    capability: Any = {
        "model": token,
        "dict": token.to_wire(),
        "json": "\n" + json.dumps(token.to_wire(), indent=2) + "\n",
        "json-bytes": json.dumps(token.to_wire()).encode(),
        "base64url": encode_header_object(token.to_wire()),
    }[form]
    server = FakeToolServer()
    with server.httpx_client(auth(capability=capability, agent_key="22" * 32)) as client:
        assert client.get("/notes").status_code == 200


def test_each_request_gets_a_fresh_proof_and_the_clock_is_truncated() -> None:
    server = FakeToolServer()
    with server.httpx_client(auth(clock=FixedClock(NOW + 0.9))) as client:
        assert client.get("/notes").status_code == 200
        assert client.get("/notes").status_code == 200  # same request: not a replay
    nonces = {seen.dpop["body"]["nonce"] for seen in server.received if seen.dpop}
    assert len(nonces) == 2
    assert all(seen.dpop and seen.dpop["body"]["issued_at"] == NOW for seen in server.received)


def test_user_supplied_execution_nonce_is_sent_unchanged() -> None:
    minting = FakeToolServer(require_nonce=True)
    with minting.httpx_client(auth()) as client:
        client.post("/notes", content=b"x")
    kernel_nonce = minting.minted[0]
    server = FakeToolServer(require_nonce=True)
    with server.httpx_client(auth()) as client:
        response = client.post(
            "/notes", content=b"x", headers={"X-Chio-Execution-Nonce": kernel_nonce}
        )
    assert response.status_code == 200
    assert len(server.received) == 1


# -- the 428 execution-nonce challenge --------------------------------------------------------


def test_nonce_challenge_is_answered_once_with_the_issued_nonce() -> None:
    server = FakeToolServer(require_nonce=True)
    with server.httpx_client(auth()) as client:
        response = client.post("/notes?draft=1", json={"title": "t"})
    assert response.status_code == 200, server.received[-1].error
    first, second = server.received
    assert (first.status, second.status) == (428, 200)
    assert first.header("X-Chio-Execution-Nonce") is None
    assert second.header("X-Chio-Execution-Nonce") == server.minted[0]
    assert first.dpop and second.dpop
    assert first.dpop["body"]["nonce"] != second.dpop["body"]["nonce"]
    assert first.body == second.body
    assert [r.status_code for r in response.history] == [428]


def test_a_second_challenge_is_returned_not_retried() -> None:
    server = FakeToolServer(always_challenge=True)
    with server.httpx_client(auth()) as client:
        response = client.post("/notes", json={})
    assert response.status_code == 428
    assert len(server.received) == 2
    assert server.received[1].header("X-Chio-Execution-Nonce") == server.minted[0]


@pytest.mark.parametrize("nonce_header", [None, "not-a-nonce", '{"nonce": 1}'])
def test_a_428_without_a_usable_nonce_is_returned_as_is(nonce_header: str | None) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        headers = {} if nonce_header is None else {"X-Chio-Execution-Nonce": nonce_header}
        return httpx.Response(428, headers=headers)

    with httpx.Client(transport=httpx.MockTransport(handler), auth=auth()) as client:
        assert client.get("http://tools.test/notes").status_code == 428
    assert len(calls) == 1


def test_unsigned_requests_are_not_retried_on_428() -> None:
    server = FakeToolServer(always_challenge=True, tool=None)
    with server.httpx_client(
        auth(tool_server=None, tool_name=None, resolver=lambda m, p: None)
    ) as client:
        response = client.get("/notes")
    assert response.status_code == 401  # no capability sent
    assert len(server.received) == 1


def test_async_client_signs_and_answers_the_challenge() -> None:
    server = FakeToolServer(require_nonce=True)

    async def run() -> httpx.Response:
        async with server.async_httpx_client(auth(kernel_key=KERNEL.public_key.hex)) as client:
            return await client.put("/notes/1?x=%20y", content=b"\x00\xff body")

    response = asyncio.run(run())
    assert response.status_code == 200, server.received[-1].error
    assert [seen.status for seen in server.received] == [428, 200]
    assert isinstance(response.extensions["chio_receipt"], HttpReceipt)


def test_async_client_raises_on_a_bad_receipt() -> None:
    server = FakeToolServer(receipt="tampered")

    async def run() -> None:
        async with server.async_httpx_client(auth(kernel_key=KERNEL.public_key)) as client:
            await client.get("/notes")

    with pytest.raises(ReceiptVerificationError):
        asyncio.run(run())


# -- tools: fixed, resolver, reserved path ----------------------------------------------------


def test_reserved_path_gives_the_tool_from_decoded_segments() -> None:
    server = FakeToolServer(tool=None)
    with server.httpx_client(auth(tool_server=None, tool_name=None)) as client:
        response = client.post("/chio/tools/srv%20files/r%C3%A9sum%C3%A9", json={"a": 1})
    assert response.status_code == 200, server.received[-1].error
    assert server.received[0].dpop
    body = server.received[0].dpop["body"]
    assert (body["tool_server"], body["tool_name"]) == ("srv files", "résumé")


@pytest.mark.parametrize(
    "path",
    ["/notes", "/chio/tools/only", "/chio/tools/a/b/c", "/chio/tools/a%2Fb/c", "/chio/tools//c"],
)
def test_no_tool_for_the_request_is_an_error(path: str) -> None:
    server = FakeToolServer(tool=None)
    with (
        server.httpx_client(auth(tool_server=None, tool_name=None)) as client,
        pytest.raises(RequestSigningError),
    ):
        client.get(path)
    assert server.received == []


def test_resolver_gets_method_and_decoded_path() -> None:
    calls: list[tuple[str, str]] = []

    def resolver(method: str, path: str) -> tuple[str, str] | None:
        calls.append((method, path))
        return ("files", "delete") if path.startswith("/files/") else None

    server = FakeToolServer(tool=("files", "delete"), require_capability=False)
    with server.httpx_client(auth(tool_server=None, tool_name=None, resolver=resolver)) as client:
        assert client.delete("/files/a%20b.txt").status_code == 200
        assert client.get("/health").status_code == 200
    assert calls == [("DELETE", "/files/a b.txt"), ("GET", "/health")]
    assert server.received[0].dpop is not None
    assert server.received[1].header("X-Chio-Capability") is None
    assert server.received[1].header("X-Chio-DPoP") is None


def test_a_path_starting_with_two_slashes_is_bound_as_a_path() -> None:
    server = FakeToolServer()
    with server.httpx_client(auth()) as client:
        response = client.post("http://tools.test//notes//a?x=1", content=b"b")
    assert response.status_code == 200, server.received[-1].error
    assert server.received[0].target == "//notes//a?x=1"


def test_repeated_query_key_cannot_be_signed() -> None:
    server = FakeToolServer()
    with server.httpx_client(auth()) as client, pytest.raises(RequestSigningError):
        client.get("/notes?a=1&a=2")
    assert server.received == []


# -- receipts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kernel_key",
    [
        pytest.param(KERNEL.public_key.hex, id="hex"),
        pytest.param("0x" + KERNEL.public_key.hex.upper(), id="0x-upper-hex"),
        pytest.param(KERNEL.public_key, id="public-key"),
        pytest.param([STRANGER.public_key.hex, KERNEL.public_key], id="list"),
    ],
)
def test_verified_receipt_is_in_the_response_extensions(kernel_key: Any) -> None:
    server = FakeToolServer(require_nonce=True)
    with server.httpx_client(auth(kernel_key=kernel_key)) as client:
        response = client.post("/notes?q=a%26b", json={"x": [1, 2]})
    receipt = response.extensions["chio_receipt"]
    assert isinstance(receipt, HttpReceipt)
    assert verified_receipt(response) is receipt
    assert receipt.id == response.headers["X-Chio-Receipt-Id"]
    assert receipt.response_status == 200
    assert "chio_receipt" in response.history[0].extensions  # the 428 was checked too


@pytest.mark.parametrize(
    "mode", ["tampered", "wrong_key", "missing", "id_mismatch", "other_request"]
)
def test_bad_receipts_raise(mode: str) -> None:
    server = FakeToolServer(receipt=mode)
    with (
        server.httpx_client(auth(kernel_key=KERNEL.public_key.hex)) as client,
        pytest.raises(ReceiptVerificationError) as caught,
    ):
        client.post("/notes", json={})
    assert isinstance(caught.value.response, httpx.Response)
    assert caught.value.response.status_code == 200


def test_a_bad_receipt_on_the_challenge_stops_before_the_retry() -> None:
    server = FakeToolServer(require_nonce=True, receipt="wrong_key")
    with (
        server.httpx_client(auth(kernel_key=KERNEL.public_key.hex)) as client,
        pytest.raises(ReceiptVerificationError),
    ):
        client.post("/notes", json={})
    assert len(server.received) == 1


def test_without_kernel_key_receipts_are_not_checked() -> None:
    server = FakeToolServer(receipt="missing")
    with server.httpx_client(auth()) as client:
        response = client.get("/notes")
    assert response.status_code == 200
    assert "chio_receipt" not in response.extensions
    assert verified_receipt(response) is None


# -- any request the client can send is bound as the server sees it ---------------------------

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
    segments=st.lists(_text.filter(lambda s: s not in ("", ".", "..")), min_size=1, max_size=3),
    params=st.dictionaries(_text.filter(bool), _text, max_size=4),
    body=_json,
)
def test_any_path_query_and_json_body_verifies(
    method: str, segments: list[str], params: dict[str, str], body: Any
) -> None:
    server = FakeToolServer()
    path = "/" + "/".join(quote(segment, safe="") for segment in segments)
    with server.httpx_client(auth(kernel_key=KERNEL.public_key)) as client:
        response = client.request(method, path, params=params, json=body)
    assert response.status_code == 200, server.received[-1].error
    assert isinstance(response.extensions["chio_receipt"], HttpReceipt)
