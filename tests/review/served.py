"""Apps for the raw-socket review tests (uvicorn / gunicorn on 127.0.0.1).

Each handler answers with what it read, so a test can compare it with what was checked.
Settings come from the environment the test sets (CHIO_*).
"""

from __future__ import annotations

from typing import Annotated, Any

import flask
from fastapi import FastAPI, Header, Query
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from werkzeug.middleware.proxy_fix import ProxyFix

from chio_middleware.integrations import tool
from chio_middleware.integrations.fastapi import Chio as FastAPIChio
from chio_middleware.integrations.flask import Chio as FlaskChio

fastapi_app = FastAPI()


@fastapi_app.get("/files/read")
@tool("srv-files", "read_file")
async def read_file(
    path: Annotated[str, Query()], x_target: Annotated[str | None, Header()] = None
) -> dict[str, Any]:
    return {"read": x_target or path}


@tool("srv-files", "read_file")
async def mounted_read(request: Request) -> JSONResponse:
    return JSONResponse({"read": request.query_params.get("path")})


fastapi_app.mount("/v1", GZipMiddleware(Starlette(routes=[Route("/read", mounted_read)])))
FastAPIChio(fastapi_app)

flask_app = flask.Flask(__name__)


@flask_app.get("/files/read")
@tool("srv-files", "read_file")
def flask_read() -> Any:
    return {"read": flask.request.args.get("path")}


flask_app.wsgi_app = ProxyFix(flask_app.wsgi_app, x_for=1)  # type: ignore[method-assign]
FlaskChio(flask_app)

flask_plain = flask.Flask("plain")


@flask_plain.get("/files/read")
@tool("srv-files", "read_file")
def plain_read() -> Any:
    return {"read": flask.request.args.get("path")}


@flask_plain.get("/blobs/<path:p>")
@tool("srv-files", "read_file")
def plain_blob(p: str) -> Any:
    return {"read": p}


FlaskChio(flask_plain)
