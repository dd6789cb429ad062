"""Finding 9: no credential in any log line or traceback the library emits.

With ``rich`` installed, structlog's development ``ConsoleRenderer`` renders ``exc_info``
with rich's traceback and ``show_locals=True``: every frame's locals, so the request
headers, the capability and the proof. These tests force an evaluation failure (a guard
that raises, with a real capability and DPoP proof) and an application failure, capture
everything the library logs, at every level, under four configurations (structlog
configured with its defaults; structlog unconfigured, so the library logs to the stdlib
logger; stdlib logging through structlog's ``ProcessorFormatter`` with the same dev
renderer; stdlib logging with a plain ``logging.Formatter``), and assert that no piece of
any credential appears, while the type and place of the failure do.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from werkzeug.test import EnvironBuilder

from chio_middleware.core.clock import FixedClock
from chio_middleware.core.encoding import decode_header_object
from chio_middleware.core.guards import GuardContext
from chio_middleware.logs import get_logger
from chio_middleware.sinks import MemorySink
from chio_middleware.wsgi import ChioWSGIMiddleware
from tests.middleware.harness import (
    AGENT,
    ISSUER,
    KERNEL,
    NOW,
    agent_headers,
    capability,
    make_driver,
    settings,
)

NOTE = b'{"title":"t","body":"b"}'
HEADERS = agent_headers("POST", "/notes", NOTE)
CAPABILITY = capability()


def _credentials() -> list[str]:
    proof = decode_header_object(HEADERS["x-chio-dpop"])
    return [
        HEADERS["x-chio-capability"],  # base64url of the capability
        HEADERS["x-chio-dpop"],  # base64url of the proof
        CAPABILITY.signature,
        proof["signature"],
        AGENT.seed_hex(),
        KERNEL.seed_hex(),
        ISSUER.seed_hex(),
    ]


def _fragments() -> set[str]:
    """Every 16-character window (stride 4) of every credential."""
    found = set()
    for secret in _credentials():
        for start in range(0, max(1, len(secret) - 16), 4):
            found.add(secret[start : start + 16])
    return found


FRAGMENTS = _fragments()


def assert_no_credentials(text: str) -> None:
    leaked = sorted(f for f in FRAGMENTS if f in text)
    assert not leaked, f"credential bytes in the log output: {leaked[:3]}"


class ExplodingGuard:
    """A guard with a bug: it raises, quoting the request's credentials in the message."""

    name = "ExplodingGuard"

    def check(self, context: GuardContext) -> None:
        capability_header = context.request.header_values("x-chio-capability")
        raise RuntimeError(f"guard bug while reading {capability_header!r}")


def exploding_wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    """An application that fails before responding, its environ full of credentials."""
    raise KeyError(environ["HTTP_X_CHIO_CAPABILITY"])


# -- logging configurations ---------------------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    pytest.importorskip("rich")  # the dev extra installs it; the point is to test with it
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def _structlog_defaults(capsys: pytest.CaptureFixture[str]) -> Callable[[], str]:
    """structlog configured with its defaults: the dev ConsoleRenderer, rich tracebacks with
    show_locals, printing to stdout (``configure()`` so the library routes through it)."""
    structlog.configure()
    return lambda: capsys.readouterr().out


def _stdlib_handler(formatter: logging.Formatter) -> Callable[[], str]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    target = logging.getLogger("chio_middleware")
    target.handlers = [handler]
    target.setLevel(logging.DEBUG)
    target.propagate = False
    return stream.getvalue


def _structlog_unconfigured() -> Callable[[], str]:
    """structlog not configured: the library logs to the stdlib logger chio_middleware."""
    return _stdlib_handler(logging.Formatter("%(levelname)s %(name)s %(message)s"))


def _stdlib(formatter: logging.Formatter, *, structlog_processors: list[Any]) -> Callable[[], str]:
    read = _stdlib_handler(formatter)
    structlog.configure(
        processors=structlog_processors,
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    return read


def _stdlib_rich() -> Callable[[], str]:
    """stdlib logging, rendered by structlog's dev ConsoleRenderer (rich) in the handler."""
    formatter = structlog.stdlib.ProcessorFormatter(processor=structlog.dev.ConsoleRenderer())
    return _stdlib(
        formatter,
        structlog_processors=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
    )


def _stdlib_plain() -> Callable[[], str]:
    """stdlib logging with a plain Formatter (tracebacks, if any, via formatException)."""
    return _stdlib(
        logging.Formatter("%(levelname)s %(name)s %(message)s %(extra_fields)s", defaults={}),
        structlog_processors=[_as_log_kwargs],
    )


def _as_log_kwargs(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog.stdlib.render_to_log_kwargs, with the fields kept visible in the line."""
    rendered: dict[str, Any] = structlog.stdlib.render_to_log_kwargs(logger, method, event)
    extra = rendered.setdefault("extra", {})
    extra["extra_fields"] = " ".join(f"{k}={v!r}" for k, v in sorted(extra.items()))
    return rendered


@pytest.fixture(
    params=["structlog-defaults", "structlog-unconfigured", "stdlib-rich", "stdlib-plain"]
)
def captured(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    if request.param == "structlog-defaults":
        read = _structlog_defaults(capsys)
    elif request.param == "structlog-unconfigured":
        read = _structlog_unconfigured()
    elif request.param == "stdlib-rich":
        read = _stdlib_rich()
    else:
        read = _stdlib_plain()
    yield read
    target = logging.getLogger("chio_middleware")
    target.handlers, target.propagate = [], True
    target.setLevel(logging.NOTSET)


# -- the failures -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_evaluation_failure_logs_no_credentials(kind: str, captured: Any) -> None:
    driver = make_driver(kind, guards=[ExplodingGuard()])
    reply = driver.request("POST", "/notes", HEADERS, NOTE)
    assert reply.status == 503
    output = captured()
    assert "chio_evaluation_failed" in output and "RuntimeError" in output
    assert "in check" in output  # where it failed: ExplodingGuard.check
    assert "chio_evaluation_failed_traceback" in output  # the bare stack, at DEBUG
    assert "guard bug while reading [" not in output  # exception messages are not logged
    assert "RuntimeError (message not logged)" in output
    assert_no_credentials(output)


def test_application_failure_logs_no_credentials(captured: Any) -> None:
    middleware = ChioWSGIMiddleware(
        exploding_wsgi_app, settings=settings(), clock=FixedClock(NOW), sink=MemorySink()
    )
    environ = EnvironBuilder(path="/notes", method="POST", headers=HEADERS, data=NOTE)
    started: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        # PEP 3333: exc_info is re-raised only once headers were sent (none were).
        started.append(status)
        return lambda data: None

    body = b"".join(middleware(environ.get_environ(), start_response))
    assert started == ["500 Internal Server Error"] and b"internal_error" in body
    output = captured()
    assert "chio_app_failed" in output and "KeyError" in output
    assert "exploding_wsgi_app" in output
    assert "KeyError (message not logged)" in output
    assert_no_credentials(output)


def test_the_credentials_would_be_seen(captured: Any) -> None:
    """The check above can fail: logging the same failure with exc_info leaks them."""
    logger = get_logger()  # the library's logger, routed as in the tests above
    try:
        ExplodingGuard().check(_context())
    except RuntimeError:
        logger.error("leaky", exc_info=True)
    with pytest.raises(AssertionError, match="credential bytes"):
        assert_no_credentials(captured())


def _context() -> Any:
    from chio_middleware.core.request import RequestView

    class Context:
        request = RequestView(
            method="POST",
            path="/notes",
            query={},
            headers=[("x-chio-capability", HEADERS["x-chio-capability"].encode())],
        )

    return Context()


def test_reprs_of_what_frames_hold_show_no_credentials() -> None:
    """Defence in depth for renderers we do not control (a server's traceback with rich's
    show_locals, an error tracker capturing locals): the objects our frames hold, the request
    view, the decoded headers and the parsed wire objects, keep credentials out of repr."""
    from chio_middleware.core.dpop import parse_dpop_proof
    from chio_middleware.core.inputs import read_chio_headers
    from chio_middleware.core.request import RequestView

    view = RequestView(
        method="POST",
        path="/notes",
        query={},
        headers=[(k, v.encode()) for k, v in HEADERS.items()],
        body=NOTE,
    )
    headers = read_chio_headers(view, max_bytes=16 * 1024)
    assert headers.raw_capability is not None and headers.dpop is not None
    proof = parse_dpop_proof(headers.dpop)
    for value in (view, headers, CAPABILITY, proof):
        assert_no_credentials(repr(value))
    assert proof.signature in proof.model_dump_json()  # hidden from repr only
