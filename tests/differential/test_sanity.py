"""The checker flags setups that let a handler act on what the middleware did not check.

A property that always holds proves nothing. Here the middleware is deliberately set up
wrong (a route left unbound, a binding to the wrong tool, a layer between the middleware
and the app that rewrites the body), and the checker, fed by the
same recording handlers and guard, must report each bypass; Hypothesis, with the same
strategy as the property test, must find one.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, find, settings

from chio_middleware.core.clock import FixedClock

from .apps import BOUND, is_asgi, protected
from .cases import JSON, tool
from .checker import violations
from .spec import NOW, SYNTHETIC_TOOL, TOOLS, Recorder, bindings, capability
from .strategies import requests
from .wire import Reply, Wire, asgi_startup, call, sign

HONEST_READ = json.dumps({"path": "/workspace/a.txt"}).encode()


def _send(kind: str, app: Any, rec: Recorder, wire: Wire) -> list[str]:
    return violations(call(kind, app, wire), rec, wire.case)


def _without(name: str) -> list[Any]:
    return bindings([t for t in TOOLS if t.name != name])


@pytest.mark.parametrize("kind", BOUND)
def test_a_route_left_unbound_is_flagged(kind: str) -> None:
    # Under the default policy an unbound GET runs (PROTOCOL.md 5.3): here, a bound
    # handler the settings forgot, with what no constraint saw.
    rec = Recorder()
    app = protected(kind, rec, routes=_without("file_get"), clock=FixedClock(NOW))
    problems = _send(kind, app, rec, Wire("GET", "/files/get?path=/etc/passwd"))
    assert any("ran but the middleware checked no tool" in p for p in problems), problems
    signed = sign(Wire("GET", "/files/get?path=/etc/passwd"), capability(), SYNTHETIC_TOOL)
    problems = _send(kind, app, rec, signed)
    assert any("the middleware checked chio_http_authority" in p for p in problems), problems


@pytest.mark.parametrize("kind", ["fastapi", "starlette", "fastapi-declared", "starlette-declared"])
def test_a_binding_that_names_no_route_fails_start_up(kind: str) -> None:
    # The differential suite's first finding under the framework router: a binding whose
    # template names no route protected nothing. Now the lifespan startup fails.
    app = protected(kind, Recorder(), routes=bindings(file_get="/files/got"))
    failure = asgi_startup(app)
    assert failure is not None and "/files/got" in failure


def test_a_flask_binding_that_names_no_route_fails_start_up() -> None:
    with pytest.raises(ValueError, match="/files/got"):
        protected("flask-declared", Recorder(), routes=bindings(file_get="/files/got"))


@pytest.mark.parametrize("kind", BOUND)
def test_a_binding_to_another_tool_is_flagged(kind: str) -> None:
    rec = Recorder()
    swapped = bindings(file_read="/files/form", file_form="/files/read")
    app = protected(kind, rec, routes=swapped, clock=FixedClock(NOW))
    wire = sign(Wire("POST", "/files/read", (JSON,), HONEST_READ), capability(), tool("file_form"))
    problems = _send(kind, app, rec, wire)
    assert any("the middleware checked srv-files/file_form" in p for p in problems), problems


def _rewrite_asgi(app: Any) -> Any:
    async def rewritten(scope: Any, receive: Any, send: Any) -> None:
        async def tampered() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"").replace(b"/workspace/a.txt", b"/etc/shadow")
                message = {**message, "body": body}
            return message

        await app(scope, tampered, send)

    return rewritten


def _rewrite_wsgi(app: Any) -> Any:
    def rewritten(environ: dict[str, Any], start_response: Any) -> Any:
        body = environ["wsgi.input"].read()
        body = body.replace(b"/workspace/a.txt", b"/etc/shadow")
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return app(environ, start_response)

    return rewritten


@pytest.mark.parametrize("kind", BOUND)
def test_a_value_the_middleware_did_not_check_is_flagged(kind: str) -> None:
    rec = Recorder()
    inner = _rewrite_asgi if is_asgi(kind) else _rewrite_wsgi
    app = protected(kind, rec, clock=FixedClock(NOW), inner=inner)
    wire = sign(
        Wire("POST", "/files/read?ref=/workspace/x", (JSON,), HONEST_READ),
        capability(),
        tool("file_read"),
    )
    problems = _send(kind, app, rec, wire)
    expected = "read path='/etc/shadow' but the middleware checked path='/workspace/a.txt'"
    assert any(expected in p for p in problems), problems


def test_a_refusal_after_which_a_handler_ran_is_flagged() -> None:
    rec = Recorder()
    rec.call("c1", "file_read", "rid")
    body = {"error": "chio_access_denied", "message": "no", "status": 403, "receipt_id": "r"}
    reply = Reply(
        403,
        [("content-type", "application/json"), ("x-chio-receipt-id", "r")],
        json.dumps(body).encode(),
    )
    assert violations(reply, rec, "c1") == [
        "the middleware refused (chio_access_denied) but handler file_read ran"
    ]


def test_a_refusal_that_is_not_a_protocol_error_is_flagged() -> None:
    reply = Reply(401, [("content-type", "text/plain")], b'{"error":"chio_access_denied"}')
    problems = violations(reply, Recorder(), "c2")
    assert any("error body members" in p for p in problems)
    assert any("answered with status 401" in p for p in problems)
    assert any("Content-Type" in p for p in problems)


@pytest.mark.parametrize("kind", ["starlette", "flask"])
def test_the_generated_requests_find_a_misbound_route(kind: str) -> None:
    rec = Recorder()
    app = protected(kind, rec, routes=_without("file_get"), clock=FixedClock(NOW))

    def breaks_the_property(drawn: tuple[Wire, tuple[str, str] | None]) -> bool:
        wire, signed_for = drawn
        if signed_for is not None:
            wire = sign(wire, capability(), signed_for)
        return bool(_send(kind, app, rec, wire))

    found = find(
        requests(),
        breaks_the_property,
        settings=settings(
            max_examples=2000, database=None, suppress_health_check=list(HealthCheck)
        ),
    )
    assert found[0].target.startswith("/files/get")
