from __future__ import annotations

import io
from typing import Any

import pytest

from chio_middleware.client import ChioRequestsAuth, ReceiptVerificationError, verified_receipt
from chio_middleware.core.clock import FixedClock
from chio_middleware.core.models import HttpReceipt
from tests.client.server import AGENT, BASE, KERNEL, NOW, FakeToolServer, make_capability


def auth(**overrides: Any) -> ChioRequestsAuth:
    options: dict[str, Any] = {
        "capability": make_capability(),
        "agent_key": AGENT,
        "tool_server": "notes",
        "tool_name": "write",
        "clock": FixedClock(NOW),
    }
    options.update(overrides)
    return ChioRequestsAuth(**options)


def test_without_kernel_key_receipts_are_not_checked() -> None:
    server = FakeToolServer(receipt="missing")
    with server.requests_session() as session:
        response = session.get(BASE + "/notes", auth=auth())
    assert response.status_code == 200
    assert verified_receipt(response) is None


def test_json_body_and_encoded_query_are_verified_by_the_server() -> None:
    server = FakeToolServer()
    with server.requests_session() as session:
        response = session.post(
            BASE + "/notes/caf%C3%A9 menu",
            params={"tag": "a b&c=d", "sym": "€+%", "empty": ""},
            json={"title": "hi"},
            auth=auth(),
        )
    assert response.status_code == 200, server.received[-1].error
    assert "+" in server.received[0].target  # requests form-encodes the space


@pytest.mark.parametrize(
    "data",
    [
        pytest.param("tïtle=x", id="str"),
        pytest.param({"a": "1", "b": "x y"}, id="form"),
        pytest.param(io.BytesIO(b"file body"), id="file"),
        pytest.param(iter([b"chunk1", b"chunk2"]), id="generator"),
    ],
)
def test_bodies_are_signed_as_the_bytes_sent(data: Any) -> None:
    server = FakeToolServer()
    with server.requests_session() as session:
        response = session.put(BASE + "/notes/1", data=data, auth=auth())
    assert response.status_code == 200, server.received[-1].error
    (seen,) = server.received
    assert seen.header("Content-Length") == str(len(seen.body))
    assert seen.header("Transfer-Encoding") is None


def test_nonce_challenge_is_answered_once() -> None:
    server = FakeToolServer(require_nonce=True)
    with server.requests_session() as session:
        response = session.post(BASE + "/notes?x=1", json={"a": 1}, auth=auth())
    assert response.status_code == 200, server.received[-1].error
    first, second = server.received
    assert (first.status, second.status) == (428, 200)
    assert second.header("X-Chio-Execution-Nonce") == server.minted[0]
    assert first.dpop and second.dpop
    assert first.dpop["body"]["nonce"] != second.dpop["body"]["nonce"]
    assert [r.status_code for r in response.history] == [428]
    assert response.request.headers["X-Chio-Execution-Nonce"] == server.minted[0]


def test_a_second_challenge_is_returned_not_retried() -> None:
    server = FakeToolServer(always_challenge=True)
    with server.requests_session() as session:
        response = session.post(BASE + "/notes", data=iter([b"a", b"b"]), auth=auth())
    assert response.status_code == 428
    assert len(server.received) == 2
    assert server.received[1].body == b"ab"  # the streamed body was sent again, whole


def test_verified_receipt_is_set_on_the_response() -> None:
    server = FakeToolServer(require_nonce=True)
    with server.requests_session() as session:
        response = session.get(BASE + "/notes", auth=auth(kernel_key=KERNEL.public_key.hex))
    receipt = verified_receipt(response)
    assert receipt is not None
    assert receipt is response.chio_receipt  # type: ignore[attr-defined]
    assert receipt.id == response.headers["X-Chio-Receipt-Id"]
    assert isinstance(verified_receipt(response.history[0]), HttpReceipt)


@pytest.mark.parametrize(
    "mode", ["tampered", "wrong_key", "missing", "id_mismatch", "other_request"]
)
def test_bad_receipts_raise(mode: str) -> None:
    server = FakeToolServer(receipt=mode)
    with server.requests_session() as session, pytest.raises(ReceiptVerificationError) as caught:
        session.get(BASE + "/notes", auth=auth(kernel_key=KERNEL.public_key.hex))
    assert caught.value.response is not None


def test_a_bad_receipt_after_the_retry_raises() -> None:
    server = FakeToolServer(require_nonce=True, receipt="id_mismatch")
    with server.requests_session() as session, pytest.raises(ReceiptVerificationError):
        session.get(BASE + "/notes", auth=auth(kernel_key=KERNEL.public_key.hex))
    assert len(server.received) == 1  # the challenge's receipt is checked first
