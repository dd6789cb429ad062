"""The notes tool service on Flask, protected by chio_middleware (WSGI).

Run: ``gunicorn examples.flask_app.app:app`` (or ``flask --app examples.flask_app.app run``)
with ``CHIO_*`` variables set (see the README beside this file). Without
``CHIO_ROUTES``/``CHIO_POLICY_FILE`` the bindings of ``examples/policy.toml`` apply.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from flask import Flask, request

from chio_middleware import ChioSettings
from chio_middleware.wsgi import ChioWSGIMiddleware

POLICY = Path(__file__).resolve().parents[1] / "policy.toml"


def create_app(settings: ChioSettings | None = None, **middleware_options: Any) -> Flask:
    """Build the notes app with ChioWSGIMiddleware around its WSGI callable."""
    app = Flask("notes")
    notes: dict[str, dict[str, str]] = {}
    ids = itertools.count(1)

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    @app.get("/notes")
    def list_notes() -> Any:
        return list(notes.values())

    @app.get("/notes/<note_id>")
    def read_note(note_id: str) -> Any:
        note = notes.get(note_id)
        return (note, 200) if note is not None else ({"error": "not_found"}, 404)

    @app.post("/notes")
    def write_note() -> Any:
        data = request.get_json(silent=True)
        if not isinstance(data, dict) or not isinstance(data.get("title"), str):
            return {"error": "title and body are required"}, 422
        note = {"id": str(next(ids)), "title": data["title"], "body": str(data.get("body", ""))}
        notes[note["id"]] = note
        return note, 201

    @app.delete("/notes/<note_id>")
    def delete_note(note_id: str) -> Any:
        if notes.pop(note_id, None) is None:
            return {"error": "not_found"}, 404
        return "", 204

    app.wsgi_app = ChioWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, settings=with_default_policy(settings), **middleware_options
    )
    return app


def with_default_policy(settings: ChioSettings | None) -> ChioSettings:
    """The settings from the environment, with the example's policy file if none is set."""
    settings = settings if settings is not None else ChioSettings()
    if not settings.routes and settings.policy_file is None:
        settings = ChioSettings(
            **{**settings.model_dump(exclude_unset=True), "policy_file": POLICY}
        )
    return settings


app = create_app()
