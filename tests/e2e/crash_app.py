"""A tool service whose handler kills its own worker process after its side effect.

``POST /jobs`` appends a line to the file named by ``CRASH_SIDE_EFFECT`` and then calls
``os._exit``: no response, no ``finally``, no atexit hook. With ``receipt_mode="decision"``
the receipt log must still say that the request was allowed (PROTOCOL.md 7.1).
"""

from __future__ import annotations

import os
from typing import Any

import flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chio_middleware import ChioSettings
from chio_middleware.asgi import ChioMiddleware
from chio_middleware.wsgi import ChioWSGIMiddleware


def _side_effect_then_die(body: bytes) -> None:
    with open(os.environ["CRASH_SIDE_EFFECT"], "ab") as effect:
        effect.write(body + b"\n")
    os._exit(3)


async def _job(request: Request) -> Response:
    _side_effect_then_die(await request.body())
    return Response(status_code=500)  # never reached


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


asgi_app = Starlette(routes=[Route("/jobs", _job, methods=["POST"]), Route("/health", _health)])
asgi_app.add_middleware(ChioMiddleware, settings=ChioSettings())

wsgi_app = flask.Flask("crash")


@wsgi_app.post("/jobs")
def _flask_job() -> Any:
    _side_effect_then_die(flask.request.get_data())
    return "", 500  # never reached


@wsgi_app.get("/health")
def _flask_health() -> Any:
    return {"status": "ok"}


wsgi_app.wsgi_app = ChioWSGIMiddleware(wsgi_app.wsgi_app, settings=ChioSettings())  # type: ignore[method-assign]
