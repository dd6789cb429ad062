"""Building blocks of the differential cases: bodies, the attacker's requests, one runner.

The attacker holds a legitimate, narrow capability (:func:`.spec.capability`: path tools
limited to ``path_prefix /workspace/`` and ``max_length 64``, no grant for ``purge``)
and adds the harmless ``?ref=/workspace/x`` so that ``path_prefix`` has a leaf it
accepts. A bypass then shows as a handler reading ``/etc/shadow`` that the middleware
never checked.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import pytest

from chio_middleware.core.clock import FixedClock

from .apps import FRAMEWORKS, is_asgi, protected
from .checker import violations
from .spec import BY_NAME, NOW, Recorder, capability
from .wire import Reply, Wire, asgi_startup, call, sign

HARMLESS = "ref=/workspace/x"
SHADOW = "/etc/shadow"
JSON = ("Content-Type", b"application/json")
TEXT = ("Content-Type", b"text/plain")
FORM = ("Content-Type", b"application/x-www-form-urlencoded")


def tool(name: str) -> tuple[str, str]:
    entry = BY_NAME[name]
    return entry.server, entry.name


@dataclass(frozen=True)
class Case:
    """One attack: the request, and how the agent signs it (``None``: no credentials)."""

    id: str
    wire: Wire
    signed_for: str | None
    #: The status PROTOCOL.md requires of the middleware, where it requires one (checked
    #: when the server delivered the request; the property is checked always).
    expect: int | None = None
    frameworks: Sequence[str] = FRAMEWORKS

    def signed(self, now: int = NOW) -> Wire:
        """The request as the attacker sends it at ``now``, with a fresh correlation id."""
        wire = replace(self.wire, case=uuid.uuid4().hex)
        if self.signed_for is None:
            return wire
        return sign(wire, capability(now), tool(self.signed_for), now=now)


def post(route: str, body: bytes, *headers: tuple[str, bytes], query: str = HARMLESS) -> Wire:
    return Wire("POST", f"{route}?{query}" if query else route, tuple(headers), body)


def multipart(fields: dict[str, str], boundary: str = "diffbound") -> tuple[bytes, bytes]:
    """A multipart/form-data body and its Content-Type value."""
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        )
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    return body, f"multipart/form-data; boundary={boundary}".encode()


@dataclass
class Target:
    """A protected app of one framework and its recorder."""

    kind: str
    app: Any
    recorder: Recorder


@cache
def target(kind: str) -> Target:
    """The protected app of ``kind``, started as its server would start it (ASGI
    lifespan startup, where the middleware checks its bindings against the routes)."""
    rec = Recorder()
    app = protected(kind, rec, clock=FixedClock(NOW))
    if is_asgi(kind):
        failure = asgi_startup(app)
        assert failure is None, f"{kind} failed to start: {failure}"
    return Target(kind, app, rec)


def case_params(cases: Sequence[Case]) -> list[Any]:
    """``pytest.param``s of every (case, framework) pair, each its own test id."""
    return [
        pytest.param(case, kind, id=f"{case.id}-{kind}")
        for case in cases
        for kind in case.frameworks
    ]


def run(kind: str, wire: Wire) -> tuple[Reply, list[str]]:
    """Send ``wire`` to the protected app of ``kind``; the reply and the property's verdict."""
    app = target(kind)
    reply = call(kind, app.app, wire)
    return reply, violations(reply, app.recorder, wire.case)


def describe(kind: str, wire: Wire, reply: Reply, problems: list[str]) -> str:
    return (
        f"{kind}: {wire.method} {wire.target!r} headers={[h for h in wire.headers if not h[0].lower().startswith('x-chio')]} "
        f"body={wire.body[:80]!r} -> {reply.status} {reply.body[:160]!r}: {problems}"
    )
