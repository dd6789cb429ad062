"""The notes tool service on Starlette, protected by chio_middleware's Starlette integration.

Run: ``uvicorn examples.starlette_app.app:app`` with ``CHIO_*`` variables set (see the
README beside this file). Each route declares its tool with ``@chio.tool`` (or
``@chio.public``); ``examples/policy.toml`` adds the guards unless ``CHIO_POLICY_FILE`` is set.
"""

from __future__ import annotations

import itertools
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chio_middleware import ChioSettings
from chio_middleware.integrations.starlette import Chio
from examples.notes_settings import with_default_policy


def create_app(settings: ChioSettings | None = None, **chio_options: Any) -> Starlette:
    """Build the notes app; every setting is checked here (a bad one raises, naming it)."""
    chio = Chio(settings=with_default_policy(settings), **chio_options)
    notes: dict[str, dict[str, str]] = {}
    ids = itertools.count(1)

    @chio.public
    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @chio.tool("srv-notes", "list_notes")
    async def list_notes(request: Request) -> Response:
        return JSONResponse(list(notes.values()))

    @chio.tool("srv-notes", "read_note")
    async def read_note(request: Request) -> Response:
        note = notes.get(request.path_params["note_id"])
        if note is None:
            return JSONResponse({"error": "not_found"}, status_code=404)
        return JSONResponse(note)

    @chio.tool("srv-notes", "write_note")
    async def write_note(request: Request) -> Response:
        data = await request.json()
        if not isinstance(data, dict) or not isinstance(data.get("title"), str):
            return JSONResponse({"error": "title and body are required"}, status_code=422)
        note = {"id": str(next(ids)), "title": data["title"], "body": str(data.get("body", ""))}
        notes[note["id"]] = note
        caller = chio.context(request)  # the verified caller: capability, subject, grant...
        return JSONResponse({**note, "by": caller.subject}, status_code=201)

    @chio.tool("srv-notes", "delete_note", nonce=True)  # a single-use execution nonce (428)
    async def delete_note(request: Request) -> Response:
        if notes.pop(request.path_params["note_id"], None) is None:
            return JSONResponse({"error": "not_found"}, status_code=404)
        return Response(status_code=204)

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/notes", list_notes, methods=["GET"]),
            Route("/notes", write_note, methods=["POST"]),
            Route("/notes/{note_id}", read_note, methods=["GET"]),
            Route("/notes/{note_id}", delete_note, methods=["DELETE"]),
        ]
    )
    chio.init_app(app)
    return app


app = create_app()
