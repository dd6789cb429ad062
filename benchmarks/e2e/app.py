"""The servers of the end-to-end load test: one notes API as Starlette and as Flask.

Loaded by ``bench_e2e.py`` as ``uvicorn app:asgi`` and ``gunicorn app:wsgi`` with
``E2E_CHIO=1`` (the middleware, the defaults a user gets: JSONL sink in
``E2E_DIR``, fsync interval, logging unconfigured) or ``E2E_CHIO=0`` (bare).
Routes: ``GET /health`` (unbound: receipt only), ``POST /notes`` (bound, trivial),
``POST /work`` (bound, about 1 ms of CPU in the handler); on Starlette also ``GET /hops``,
the middleware's count of receipts recorded in a worker thread.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chio_middleware import ChioSettings, RouteBinding
from chio_middleware.asgi import ChioMiddleware
from chio_middleware.wsgi import ChioWSGIMiddleware

ISSUER_SEED, KERNEL_SEED = "0b" * 32, "22" * 32
ROUTES = [
    RouteBinding(method="POST", path="/notes", tool_server="srv-notes", tool_name="write_note"),
    RouteBinding(method="POST", path="/work", tool_server="srv-notes", tool_name="work"),
]


def busy(seconds: float = 0.001) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def settings() -> ChioSettings:
    from chio_middleware.core.crypto import SigningKey

    return ChioSettings(
        signing_key=KERNEL_SEED,
        trusted_issuers=[SigningKey.from_seed_hex(ISSUER_SEED).public_key.hex],
        routes=ROUTES,
        # One load-test agent holds far more live proofs than a real one: the per-subject
        # quota (still checked on every request) is raised to fit them.
        store_subject_quota=10_000_000,
        receipt_sink=f"jsonl:{Path(os.environ.get('E2E_DIR', '.')) / 'receipts.jsonl'}",
    )


def _starlette() -> Any:
    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def notes(request: Request) -> Response:
        data = await request.json()
        return JSONResponse({"id": "1", "title": data["title"]}, status_code=201)

    async def work(request: Request) -> Response:
        data = await request.json()
        busy()
        return JSONResponse({"id": "1", "title": data["title"]}, status_code=201)

    async def hops(request: Request) -> Response:
        # How many receipts the middleware recorded in a worker thread (the driver asks
        # after each run; bench_e2e.py prints them).
        return JSONResponse({"worker_hops": middleware.worker_hops if middleware else 0})

    app: Any = Starlette(
        routes=[
            Route("/health", health),
            Route("/notes", notes, methods=["POST"]),
            Route("/work", work, methods=["POST"]),
            Route("/hops", hops),
        ]
    )
    middleware: ChioMiddleware | None = None
    if os.environ.get("E2E_CHIO") == "1":
        app = middleware = ChioMiddleware(app, settings=settings())
    return app


def _flask() -> Any:
    app = flask.Flask("e2e")

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    @app.post("/notes")
    def notes() -> Any:
        data = flask.request.get_json()
        return {"id": "1", "title": data["title"]}, 201

    @app.post("/work")
    def work() -> Any:
        data = flask.request.get_json()
        busy()
        return {"id": "1", "title": data["title"]}, 201

    if os.environ.get("E2E_CHIO") == "1":
        app.wsgi_app = ChioWSGIMiddleware(app.wsgi_app, settings=settings())  # type: ignore[method-assign]
    return app


if os.environ.get("E2E_FRAMEWORK", "starlette") == "starlette":
    asgi = _starlette()
else:
    wsgi = _flask()
