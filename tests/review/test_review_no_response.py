"""Outside review (2026-12-01, second): an ASGI app that returns without responding.

The app may have acted; the server would answer 500 and no receipt would record it. The
middleware now answers that 500 itself, with its receipt, like a crash before responding.
"""

from typing import Any

from starlette.testclient import TestClient

from chio_middleware.asgi import ChioMiddleware
from chio_middleware.core.clock import FixedClock

from ..middleware.harness import NOW, settings

ran: list[str] = []


async def silent_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        ran.append(scope["path"])  # a side effect, then no response at all


def test_an_app_that_never_responds_gets_a_500_with_its_receipt() -> None:
    ran.clear()
    middleware = ChioMiddleware(silent_app, settings=settings(routes=[]), clock=FixedClock(NOW))
    response = TestClient(middleware, raise_server_exceptions=False).get("/health")
    assert ran == ["/health"]
    assert response.status_code == 500
    assert "x-chio-receipt" in response.headers
    receipts = middleware.runtime.sink.receipts  # type: ignore[attr-defined]
    assert [r.response_status for r in receipts] == [500]
    assert receipts[-1].id == response.headers["x-chio-receipt-id"]
