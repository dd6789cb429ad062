"""A fake Chio-protected tool server that verifies what the client sent with the core.

It decodes the request independently of the client (stdlib ``urllib.parse``), so the tests
check that both ends agree on the request binding hash. Transports for httpx and requests
wrap :meth:`FakeToolServer.handle`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any
from urllib.parse import parse_qsl, unquote

import httpx
import requests
import requests.adapters
from requests.structures import CaseInsensitiveDict

from chio_middleware.core.capability import CapabilityVerifier, sign_capability
from chio_middleware.core.clock import FixedClock
from chio_middleware.core.crypto import SigningKey, sha256_hex
from chio_middleware.core.dpop import DpopBinding, verify_dpop_proof
from chio_middleware.core.encoding import decode_header_object, encode_header_object
from chio_middleware.core.errors import ChioError
from chio_middleware.core.hashing import body_hash, content_hash, request_binding_hash
from chio_middleware.core.models import CapabilityToken, NonceBinding, Verdict
from chio_middleware.core.nonce import mint_execution_nonce, verify_execution_nonce
from chio_middleware.core.receipts import encode_receipt_header, sign_receipt
from chio_middleware.core.replay import MemoryReplayStore

NOW = 1_700_000_000
ISSUER = SigningKey.from_seed_hex("21" * 32)
AGENT = SigningKey.from_seed_hex("22" * 32)
KERNEL = SigningKey.from_seed_hex("23" * 32)
STRANGER = SigningKey.from_seed_hex("24" * 32)
BASE = "http://tools.test"


def make_capability(subject: SigningKey = AGENT, cap_id: str = "cap-1") -> CapabilityToken:
    """A capability for every tool, signed by ISSUER, valid around NOW."""
    return sign_capability(
        ISSUER,
        {
            "id": cap_id,
            "issuer": ISSUER.public_key.hex,
            "subject": subject.public_key.hex,
            "scope": {"grants": [{"server_id": "*", "tool_name": "*", "operations": ["invoke"]}]},
            "issued_at": NOW - 60,
            "expires_at": NOW + 3600,
        },
    )


@dataclasses.dataclass
class Received:
    """One request as the server saw it, and what it concluded."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    status: int = 0
    error: str | None = None
    dpop: dict[str, Any] | None = None

    def header(self, name: str) -> str | None:
        """The single value of a header (None if absent); a repeat fails the test."""
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None


@dataclasses.dataclass
class FakeToolServer:
    """Verifies capability, DPoP and execution nonce; signs a receipt on every response.

    ``tool`` fixes the tool of every route; otherwise the reserved path gives it.
    ``receipt`` picks how the receipt headers are (mis)made.
    """

    tool: tuple[str, str] | None = ("notes", "write")
    require_nonce: bool = False
    always_challenge: bool = False
    require_capability: bool = True
    receipt: str = "ok"
    clock: FixedClock = dataclasses.field(default_factory=lambda: FixedClock(NOW))
    replay: MemoryReplayStore = dataclasses.field(default_factory=MemoryReplayStore)
    received: list[Received] = dataclasses.field(default_factory=list)
    minted: list[str] = dataclasses.field(default_factory=list)

    def handle(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Answer one request: (status, headers, body)."""
        seen = Received(method, target, headers, body)
        self.received.append(seen)
        raw_path, _, raw_query = target.partition("?")  # origin form: "//x" is a path
        path = unquote(raw_path, errors="strict")
        pairs = parse_qsl(raw_query, keep_blank_values=True)
        query = dict(pairs)
        assert len(query) == len(pairs), "repeated query key reached the server"
        extra: list[tuple[str, str]] = []
        try:
            seen.status = self._decide(seen, path, query, extra)
        except ChioError as exc:
            seen.status, seen.error = exc.status, exc.code
        payload = json.dumps({"error": seen.error} if seen.error else {"ok": True}).encode()
        return seen.status, extra + self._receipt_headers(seen, path, query), payload

    def _decide(
        self, seen: Received, path: str, query: dict[str, str], extra: list[tuple[str, str]]
    ) -> int:
        now = int(self.clock())
        cap_value = seen.header("X-Chio-Capability")
        if cap_value is None:
            return 401 if self.require_capability else 200
        token = CapabilityVerifier(trusted_issuers=[ISSUER.public_key]).verify(
            decode_header_object(cap_value), now=now
        )
        tool = self.tool or self._reserved(path)
        binding_hash = request_binding_hash(seen.method, path, query, body_hash(seen.body))
        dpop_value = seen.header("X-Chio-DPoP")
        assert dpop_value is not None, "capability sent without DPoP"
        seen.dpop = decode_header_object(dpop_value)
        verify_dpop_proof(
            seen.dpop,
            subject=token.subject,
            expected=DpopBinding(token.id, tool[0], tool[1], binding_hash),
            now=now,
            replay_store=self.replay,
        )
        nonce_binding = NonceBinding(
            subject_id=token.subject,
            capability_id=token.id,
            tool_server=tool[0],
            tool_name=tool[1],
            parameter_hash=binding_hash,
        )
        nonce_value = seen.header("X-Chio-Execution-Nonce")
        if nonce_value is not None:
            verify_execution_nonce(
                decode_header_object(nonce_value),
                expected=nonce_binding,
                now=now,
                trusted_signers=[KERNEL.public_key],
                replay_store=self.replay,
            )
        if self.always_challenge or (self.require_nonce and nonce_value is None):
            minted = encode_header_object(
                mint_execution_nonce(KERNEL, binding=nonce_binding, now=now).to_wire()
            )
            self.minted.append(minted)
            extra.append(("X-Chio-Execution-Nonce", minted))
            return 428
        return 200

    @staticmethod
    def _reserved(path: str) -> tuple[str, str]:
        segments = path.split("/")
        assert segments[:3] == ["", "chio", "tools"] and len(segments) == 5, path
        return segments[3], segments[4]

    def _receipt_headers(
        self, seen: Received, path: str, query: dict[str, str]
    ) -> list[tuple[str, str]]:
        if self.receipt == "missing":
            return []
        route = "/chio/tools/{server}/{tool}" if path.startswith("/chio/tools/") else path
        hashed_path = path + "/other" if self.receipt == "other_request" else path
        receipt = sign_receipt(
            STRANGER if self.receipt == "wrong_key" else KERNEL,
            request_id=f"req-{len(self.received)}",
            route_pattern=route,
            method=seen.method,
            caller_identity_hash=sha256_hex(b"caller"),
            verdict=Verdict.allow() if seen.status < 400 else Verdict.deny("no", "G", seen.status),
            response_status=seen.status,
            timestamp=int(self.clock()),
            content_hash=content_hash(seen.method, hashed_path, query, body_hash(seen.body), route),
            policy_hash=sha256_hex(b"policy"),
        )
        value = encode_receipt_header(receipt)
        receipt_id = receipt.id
        if self.receipt == "tampered":
            wire = receipt.to_wire()
            wire["response_status"] = 299
            value = encode_header_object(wire)
        elif self.receipt == "id_mismatch":
            receipt_id = receipt_id[:-1] + ("0" if receipt_id[-1] != "0" else "1")
        return [("X-Chio-Receipt", value), ("X-Chio-Receipt-Id", receipt_id)]

    # -- transports ------------------------------------------------------------------------

    def httpx_handler(self, request: httpx.Request) -> httpx.Response:
        """An ``httpx.MockTransport`` handler (sync and async clients)."""
        status, headers, body = self.handle(
            request.method,
            request.url.raw_path.decode("ascii"),
            request.headers.multi_items(),
            request.content,
        )
        return httpx.Response(status, headers=headers, content=body)

    def httpx_client(self, auth: httpx.Auth) -> httpx.Client:
        """A sync client whose transport is this server."""
        return httpx.Client(
            base_url=BASE, transport=httpx.MockTransport(self.httpx_handler), auth=auth
        )

    def async_httpx_client(self, auth: httpx.Auth) -> httpx.AsyncClient:
        """An async client whose transport is this server."""
        return httpx.AsyncClient(
            base_url=BASE, transport=httpx.MockTransport(self.httpx_handler), auth=auth
        )

    def requests_session(self) -> requests.Session:
        """A session whose adapter for BASE is this server (no network)."""
        session = requests.Session()
        session.mount(BASE + "/", InMemoryAdapter(self))
        return session


class InMemoryAdapter(requests.adapters.BaseAdapter):
    """A requests transport adapter that answers from a FakeToolServer in memory."""

    def __init__(self, server: FakeToolServer) -> None:
        super().__init__()
        self.server = server

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        body = request.body
        assert body is None or isinstance(body, bytes), f"body sent as {type(body).__name__}"
        status, headers, content = self.server.handle(
            request.method or "GET", request.path_url, list(request.headers.items()), body or b""
        )
        response = requests.Response()
        response.status_code = status
        response.headers = CaseInsensitiveDict(dict(headers))
        response._content = content
        response.url = request.url or ""
        response.request = request
        response.connection = self  # type: ignore[assignment]
        return response

    def close(self) -> None:
        """Nothing to release."""
