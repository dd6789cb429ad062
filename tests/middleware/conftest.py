"""The ``driver`` fixture: every behavioural test runs through both adapters."""

from __future__ import annotations

import pytest

from .harness import Driver, make_driver


@pytest.fixture(params=["asgi", "wsgi"])
def driver(request: pytest.FixtureRequest) -> Driver:
    """The notes app behind the ASGI (Starlette) or the WSGI (Flask) middleware."""
    return make_driver(request.param)
