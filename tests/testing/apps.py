"""The three small apps of the README's "Testing your app" section, exactly as shown there.

Each records what its handlers saw in ``SEEN`` so the tests can check that a handler ran
(once) and which Chio headers reached it.
"""

from __future__ import annotations

from typing import Any

import flask
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chio_middleware import ChioSettings
from chio_middleware.asgi import ChioMiddleware
from chio_middleware.integrations import public, tool
from chio_middleware.wsgi import ChioWSGIMiddleware

SEEN: list[tuple[str, Any]] = []


# -- Starlette ---------------------------------------------------------------------------------


@tool("srv-notes", "write_note")
async def write_note(request: StarletteRequest) -> Response:
    SEEN.append(("write_note", await request.json()))
    return JSONResponse({"id": "1"}, status_code=201)


@tool("srv-notes", "delete_note", nonce=True)
async def delete_note(request: StarletteRequest) -> Response:
    SEEN.append(("delete_note", request.path_params["note_id"]))
    return Response(status_code=204)


@public
async def health(request: StarletteRequest) -> Response:
    SEEN.append(("health", request.headers.get("x-chio-capability")))
    return JSONResponse({"status": "ok"})


async def unbound(request: StarletteRequest) -> Response:
    SEEN.append(("unbound", None))
    return JSONResponse({"ok": True})


def create_starlette_app(settings: ChioSettings | None = None) -> Starlette:
    app = Starlette(
        routes=[
            Route("/notes", write_note, methods=["POST"]),
            Route("/notes/{note_id:int}", delete_note, methods=["DELETE"]),
            Route("/health", health),
            Route("/unbound", unbound, methods=["POST"]),
        ]
    )
    app.add_middleware(ChioMiddleware, settings=settings)
    return app


# -- FastAPI -----------------------------------------------------------------------------------


def create_fastapi_app(settings: ChioSettings | None = None) -> FastAPI:
    app = FastAPI()

    @app.post("/notes", status_code=201)
    @tool("srv-notes", "write_note")
    async def write_note(note: dict[str, str]) -> dict[str, str]:
        SEEN.append(("write_note", note))
        return {"id": "1"}

    @app.delete("/notes/{note_id}", status_code=204)
    @tool("srv-notes", "delete_note", nonce=True)
    async def delete_note(note_id: int) -> None:
        SEEN.append(("delete_note", note_id))

    @app.get("/health")
    @public
    async def health(request: Request) -> dict[str, str]:
        SEEN.append(("health", request.headers.get("x-chio-capability")))
        return {"status": "ok"}

    app.add_middleware(ChioMiddleware, settings=settings)
    return app


# -- Flask -------------------------------------------------------------------------------------


def create_flask_app(settings: ChioSettings | None = None) -> flask.Flask:
    app = flask.Flask(__name__)

    @app.post("/notes")
    @tool("srv-notes", "write_note")
    def write_note() -> tuple[dict[str, str], int]:
        SEEN.append(("write_note", flask.request.get_json()))
        return {"id": "1"}, 201

    @app.delete("/notes/<int:note_id>")
    @tool("srv-notes", "delete_note", nonce=True)
    def delete_note(note_id: int) -> tuple[str, int]:
        SEEN.append(("delete_note", note_id))
        return "", 204

    @app.get("/health")
    @public
    def health() -> dict[str, str]:
        SEEN.append(("health", flask.request.headers.get("x-chio-capability")))
        return {"status": "ok"}

    app.wsgi_app = ChioWSGIMiddleware(app.wsgi_app, settings=settings)  # type: ignore[method-assign]
    return app
