"""Receipt logs made the way the middleware makes them: ``JsonlSink.record`` + ``sign_receipt``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chio_middleware.core.crypto import SigningKey
from chio_middleware.core.hashing import (
    anonymous_identity,
    body_hash,
    caller_identity_hash,
    content_hash,
    dpop_identity,
)
from chio_middleware.core.models import GuardEvidence, HttpReceipt, Verdict
from chio_middleware.core.receipts import sign_receipt
from chio_middleware.sinks import SignReceipt
from chio_middleware.sinks.jsonl import JsonlSink

KERNEL = SigningKey(bytes(range(32)))
AGENT = SigningKey(bytes(range(1, 33)))
POLICY_HASH = "ab" * 32
BASE_TIME = 1_767_225_600  # 2026-01-01T00:00:00Z

#: (method, path, route pattern, status, deny) cycled through by :func:`request_signer`.
_REQUESTS: list[tuple[str, str, str, int, tuple[str, str] | None]] = [
    ("POST", "/chio/tools/notes/write", "/chio/tools/{server}/{tool}", 200, None),
    ("GET", "/notes/7", "/notes/{id}", 200, None),
    ("DELETE", "/notes/7", "/notes/{id}", 401, ("DPoP proof has expired", "DpopGuard")),
    ("GET", "/notes/../etc/passwd", "/notes/{id}", 403, ("path outside prefix", "PathGuard")),
    ("POST", "/notes", "/notes", 201, None),
]


def request_signer(index: int, key: SigningKey = KERNEL, *, tag: str = "") -> SignReceipt:
    """The ``sign`` callback the middleware would hand the sink for request ``index``."""
    method, path, route, status, deny = _REQUESTS[index % len(_REQUESTS)]
    body = f'{{"n":{index}}}'.encode() if method == "POST" else b""
    identity = dpop_identity(AGENT.public_key.hex) if deny is None else anonymous_identity()
    verdict = Verdict.allow() if deny is None else Verdict.deny(deny[0], deny[1], status)
    evidence = [GuardEvidence(guard_name="CapabilityGuard", verdict=deny is None)]

    def sign(extra: Mapping[str, Any]) -> HttpReceipt:
        metadata: dict[str, Any] = {"chio_http_status_scope": "final", **extra}
        if route.startswith("/chio/tools"):
            metadata.update(chio_tool_server="notes", chio_tool_name="write")
        return sign_receipt(
            key,
            request_id=f"req-{tag}{index}",
            route_pattern=route,
            method=method,
            caller_identity_hash=caller_identity_hash(identity),
            verdict=verdict,
            evidence=evidence,
            response_status=status,
            timestamp=BASE_TIME + index,
            content_hash=content_hash(method, path, {}, body_hash(body), route),
            policy_hash=POLICY_HASH,
            capability_id=f"cap-{index % 3}",
            metadata=metadata,
        )

    return sign


def write_log(
    path: str | os.PathLike[str], count: int, *, start: int = 0, tag: str = "", **options: Any
) -> list[HttpReceipt]:
    """Record ``count`` receipts through a :class:`JsonlSink` on ``path``; close it."""
    sink = JsonlSink(path, **options)
    try:
        return [sink.record(request_signer(start + i, tag=tag)) for i in range(count)]
    finally:
        sink.close()


def lines_of(path: str | os.PathLike[str]) -> list[bytes]:
    """The lines of a file, each with its newline."""
    return Path(path).read_bytes().splitlines(keepends=True)


def write_lines(path: str | os.PathLike[str], lines: list[bytes]) -> None:
    """Replace a file's content with ``lines``."""
    Path(path).write_bytes(b"".join(lines))
