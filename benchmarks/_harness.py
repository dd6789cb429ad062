"""Shared pieces of the benchmarks: in-process callers, request makers, the floor, statistics.

Requests go straight into the ASGI/WSGI callables (no sockets). Every protected request
carries a fresh DPoP proof (and a fresh execution nonce where the row needs one), made
before the timed loop so that proof generation is never measured.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nacl.signing

# BENCH_SOURCE: another checkout's tree to measure (benchmarks/compare.py sets it).
sys.path.insert(0, os.environ.get("BENCH_SOURCE") or str(Path(__file__).resolve().parents[1]))

from chio_middleware.core.crypto import SigningKey
from chio_middleware.core.dpop import DpopBinding, create_dpop_proof
from chio_middleware.core.encoding import encode_header_object
from chio_middleware.core.hashing import body_hash, request_binding_hash
from chio_middleware.core.models import NonceBinding
from chio_middleware.core.nonce import mint_execution_nonce
from tests.middleware.harness import (
    AGENT,
    ISSUER,
    KERNEL,
    NOW,
    ROUTES,
    capability,
)

Request = tuple[str, str, list[tuple[str, str]], bytes]
Call = Callable[[str, str, list[tuple[str, str]], bytes], int]

NOTE = json.dumps({"title": "t", "body": "b"}).encode()
CAP = capability()
CAP_HEADER = encode_header_object(CAP.to_wire())

__all__ = [
    "AGENT",
    "CAP",
    "CLOCK",
    "CLOCK_NAME",
    "ISSUER",
    "KERNEL",
    "NOTE",
    "NOW",
    "ROUTES",
    "asgi_caller",
    "bad_proof_request",
    "bound_post",
    "fastapi_app",
    "floor_us",
    "median_spread",
    "nonce_delete",
    "wsgi_caller",
]


def _proof(method: str, path: str, body: bytes, tool: str, key: SigningKey = AGENT) -> str:
    action = request_binding_hash(method, path, {}, body_hash(body))
    dpop = create_dpop_proof(
        key, binding=DpopBinding(CAP.id, "srv-notes", tool, action), issued_at=NOW
    )
    return encode_header_object(dpop.to_wire())


def bound_post() -> Request:
    """POST /notes with the capability and a fresh proof bound to this request."""
    headers = [
        ("x-chio-capability", CAP_HEADER),
        ("content-type", "application/json"),
        ("x-chio-dpop", _proof("POST", "/notes", NOTE, "write_note")),
    ]
    return ("POST", "/notes", headers, NOTE)


def nonce_delete() -> Request:
    """DELETE /notes/1 with a proof and a fresh execution nonce the kernel minted for it."""
    action = request_binding_hash("DELETE", "/notes/1", {}, body_hash(b""))
    binding = NonceBinding(
        subject_id=AGENT.public_key.hex,
        capability_id=CAP.id,
        tool_server="srv-notes",
        tool_name="delete_note",
        parameter_hash=action,
    )
    nonce = mint_execution_nonce(KERNEL, binding=binding, now=NOW, ttl=30)
    headers = [
        ("x-chio-capability", CAP_HEADER),
        ("x-chio-dpop", _proof("DELETE", "/notes/1", b"", "delete_note")),
        ("x-chio-execution-nonce", encode_header_object(nonce.to_wire())),
    ]
    return ("DELETE", "/notes/1", headers, b"")


def bad_proof_request() -> Request:
    """POST /notes whose proof's signature is wrong (the verify runs and fails: 401)."""
    action = request_binding_hash("POST", "/notes", {}, body_hash(NOTE))
    dpop = create_dpop_proof(
        AGENT, binding=DpopBinding(CAP.id, "srv-notes", "write_note", action), issued_at=NOW
    )
    wire = dpop.to_wire()
    signature = wire["signature"]
    wire["signature"] = ("0" if signature[0] != "0" else "1") + signature[1:]
    headers = [
        ("x-chio-capability", CAP_HEADER),
        ("content-type", "application/json"),
        ("x-chio-dpop", encode_header_object(wire)),
    ]
    return ("POST", "/notes", headers, NOTE)


def fastapi_app() -> Any:
    """The benchmark's routes as a FastAPI user writes them (``_fastapi_app.py``)."""
    from _fastapi_app import make_app

    return make_app()


def asgi_caller(app: Any) -> Call:
    """Call an ASGI app on one private event loop; returns the response status."""
    loop = asyncio.new_event_loop()

    def call(method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(k.encode(), v.encode()) for k, v in headers],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        loop.run_until_complete(app(scope, receive, send))
        return int(sent[0]["status"])

    return call


def wsgi_caller(app: Any) -> Call:
    """Call a WSGI app; returns the response status."""

    def call(method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> int:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "bench",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(body)),
        }
        for key, value in headers:
            name = key.upper().replace("-", "_")
            environ[name if name == "CONTENT_TYPE" else "HTTP_" + name] = value
        status: list[str] = []
        result = app(environ, lambda s, h, e=None: status.append(s))
        b"".join(result)
        getattr(result, "close", lambda: None)()
        return int(status[0][:3])

    return call


#: The clock of every timing here. CPU time of this process (all its threads, so the JSONL
#: sink's writer counts) by default: on a shared machine wall time mostly measures the wait
#: for a core. ``BENCH_CLOCK=wall`` times wall-clock instead.
CLOCK = time.perf_counter if os.environ.get("BENCH_CLOCK") == "wall" else time.process_time
CLOCK_NAME = "wall" if CLOCK is time.perf_counter else "process CPU"


def time_batch(call: Call, requests: Sequence[Request], expect: int | None = None) -> float:
    """Microseconds per request over ``requests`` (each sent once, in order)."""
    first = call(*requests[0])  # not timed: checks the row answers what it should
    if expect is not None and first != expect:
        raise SystemExit(f"benchmark request answered {first}, expected {expect}")
    wrong = 0
    start = CLOCK()
    for request in requests[1:]:
        if call(*request) != first:
            wrong += 1
    elapsed = CLOCK() - start
    if wrong:  # a benchmark of refusals it did not mean to measure is no benchmark
        raise SystemExit(f"{wrong} of {len(requests) - 1} benchmark requests answered otherwise than {first}")
    return elapsed / (len(requests) - 1) * 1e6


_RAW = nacl.signing.SigningKey(b"\x01" * 32)
_MSG = b"x" * 600
_SIG = _RAW.sign(_MSG).signature


def floor_us(number: int = 2000) -> tuple[float, float]:
    """(Ed25519 verify, Ed25519 sign) in microseconds, raw PyNaCl, this run."""
    verify = _RAW.verify_key.verify
    start = CLOCK()
    for _ in range(number):
        verify(_MSG, _SIG)
    verify_us = (CLOCK() - start) / number * 1e6
    sign = _RAW.sign
    start = CLOCK()
    for _ in range(number):
        sign(_MSG)
    sign_us = (CLOCK() - start) / number * 1e6
    return verify_us, sign_us


def median_spread(values: Sequence[float]) -> tuple[float, float]:
    """Median and the half-width of the interquartile range, as a fraction of the median."""
    ordered = sorted(values)
    median = statistics.median(ordered)
    if len(ordered) < 4:
        return median, (ordered[-1] - ordered[0]) / 2 / median if median else 0.0
    q = statistics.quantiles(ordered, n=4)
    return median, (q[2] - q[0]) / 2 / median if median else 0.0
