"""The benchmark's routes as a FastAPI user writes them.

A body model, a typed path parameter, the tools declared on the endpoints (``@tool`` only
marks the function: the bare app runs the same code), so FastAPI's own checks run in the
protected cells (the route facts, the typed path parameter compared with its text, the
body's members compared with the JSON sent). No ``from __future__ import annotations``
here: FastAPI reads the annotations at route creation.
"""

from typing import Any

from fastapi import FastAPI, Response
from pydantic import BaseModel

from chio_middleware.integrations import public, tool


class NoteIn(BaseModel):
    title: str
    body: str


def make_app() -> FastAPI:
    notes: dict[int, dict[str, Any]] = {1: {"id": 1, "title": "first", "body": "hello"}}
    app = FastAPI()

    @app.get("/health")
    @public
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/notes", status_code=201)
    @tool("srv-notes", "write_note")
    async def write_note(note: NoteIn) -> dict[str, Any]:
        created = {"id": len(notes) + 1, "title": note.title, "body": note.body}
        notes[created["id"]] = created
        return created

    @app.delete("/notes/{note_id}")
    @tool("srv-notes", "delete_note", nonce=True)
    async def delete_note(note_id: int) -> Response:
        notes.pop(note_id, None)
        return Response(status_code=204)

    return app
