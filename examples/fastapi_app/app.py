"""The notes tool service on FastAPI, protected by chio_middleware's FastAPI integration.

Run: ``uvicorn examples.fastapi_app.app:app`` with ``CHIO_*`` variables set (see the README
beside this file). Each route declares its tool with ``@chio.tool`` (or ``@chio.public``),
the handler gets the verified caller as a ``Caller`` parameter, and ``/docs`` shows the
Chio headers and each route's tool. ``examples/policy.toml`` adds the guards unless
``CHIO_POLICY_FILE`` is set.
"""

from __future__ import annotations

import itertools
from typing import Any

from fastapi import FastAPI, HTTPException, Response
from pydantic import BaseModel

from chio_middleware import ChioSettings
from chio_middleware.integrations.fastapi import Caller, Chio
from examples.notes_settings import with_default_policy


class NewNote(BaseModel):
    title: str
    body: str = ""


class Note(NewNote):
    id: str
    by: str | None = None


#: FastAPI's own documentation routes: public (no capability), also under ``deny``.
DOCS = ["/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"]


def create_app(settings: ChioSettings | None = None, **chio_options: Any) -> FastAPI:
    """Build the notes app; every setting is checked here (a bad one raises, naming it)."""
    app = FastAPI(title="notes (srv-notes)")
    settings = with_default_policy(settings)
    if not settings.public_paths:
        settings = ChioSettings(**{**settings.model_dump(exclude_unset=True), "public_paths": DOCS})
    chio = Chio(app, settings=settings, **chio_options)
    notes: dict[str, Note] = {}
    ids = itertools.count(1)

    @app.get("/health")
    @chio.public
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/notes")
    @chio.tool("srv-notes", "list_notes")
    async def list_notes() -> list[Note]:
        return list(notes.values())

    @app.get("/notes/{note_id}")
    @chio.tool("srv-notes", "read_note")
    async def read_note(note_id: str) -> Note:
        if note_id not in notes:
            raise HTTPException(404, "not_found")
        return notes[note_id]

    @app.post("/notes", status_code=201)
    @chio.tool("srv-notes", "write_note")
    async def write_note(new: NewNote, caller: Caller) -> Note:
        note = Note(id=str(next(ids)), title=new.title, body=new.body, by=caller.subject)
        notes[note.id] = note
        return note

    @app.delete("/notes/{note_id}", status_code=204)
    @chio.tool("srv-notes", "delete_note", nonce=True)  # a single-use execution nonce (428)
    async def delete_note(note_id: str) -> Response:
        if notes.pop(note_id, None) is None:
            raise HTTPException(404, "not_found")
        return Response(status_code=204)

    return app


app = create_app()
