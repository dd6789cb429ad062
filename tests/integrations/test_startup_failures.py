"""A bad setting stops the start-up under every way the integration is built (item 4).

The servers themselves are in tests/e2e/test_startup.py; these pin the two mechanisms:
FastAPI's own ``build_middleware_stack`` (an override of Starlette's) is recognised as
the lazy build, and under uvicorn's ``--workers`` supervisor ``Chio`` moves its
construction error to the lifespan start-up, which stops the supervisor.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.testclient import TestClient

from chio_middleware.asgi import ChioMiddleware, ChioStartupError
from chio_middleware.integrations import fastapi as chio_fastapi
from chio_middleware.integrations import starlette as chio_starlette

from ..middleware.harness import settings

BAD = {"guards": ["no.such.module:Guard"]}


@pytest.mark.parametrize("framework", [Starlette, FastAPI])
def test_add_middleware_with_a_bad_setting_fails_the_lifespan(framework: Any) -> None:
    app = framework()
    app.add_middleware(ChioMiddleware, settings=settings(**BAD))
    with pytest.raises(RuntimeError, match="guards: cannot import"), TestClient(app):
        pass


def _in_uvicorn_worker(build: Any) -> Any:
    """Call ``build`` from a frame of uvicorn's multiprocess supervisor module."""
    namespace: dict[str, Any] = {"__name__": "uvicorn.supervisors.multiprocess", "b": build}
    exec("def target():\n    return b()\n", namespace)
    return namespace["target"]()


@pytest.mark.parametrize("integration", [chio_starlette, chio_fastapi])
def test_under_uvicorn_workers_the_error_fails_the_lifespan(integration: Any) -> None:
    with pytest.raises(ValueError, match="guards"):  # elsewhere: at construction
        integration.Chio(settings=settings(**BAD))
    app = FastAPI() if integration is chio_fastapi else Starlette()
    chio = _in_uvicorn_worker(lambda: integration.Chio(app, settings=settings(**BAD)))
    with pytest.raises(ChioStartupError, match="guards: cannot import"):
        _ = chio.runtime
    with pytest.raises(RuntimeError, match="guards: cannot import"), TestClient(app):
        pass
    # a server that skips the lifespan (--lifespan off) gets a 503 for every request
    response = TestClient(app).get("/")
    assert response.status_code == 503
    assert response.json()["error"] == "chio_unavailable"
