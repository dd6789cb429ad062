"""The notes tool service on Flask, protected by chio_middleware's Flask extension.

Run: ``gunicorn examples.flask_app.app:app`` (or ``flask --app examples.flask_app.app run``)
with ``CHIO_*`` variables set, in the environment or in ``app.config`` (see the README
beside this file). Each view declares its tool with ``@chio.tool`` (or ``@chio.public``);
``examples/policy.toml`` adds the guards unless ``CHIO_POLICY_FILE`` is set.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app, g, request

from chio_middleware.integrations.flask import Chio

POLICY = Path(__file__).resolve().parents[1] / "policy.toml"

#: The extension: its decorators declare each view's tool; ``init_app`` reads ``CHIO_*``.
chio = Chio()
notes_api = Blueprint("notes", __name__)


def _notes() -> dict[str, dict[str, str]]:
    state: dict[str, dict[str, str]] = current_app.extensions["notes"]
    return state


@notes_api.get("/health")
@chio.public
def health() -> Any:
    return {"status": "ok"}


@notes_api.get("/notes")
@chio.tool("srv-notes", "list_notes")
def list_notes() -> Any:
    return list(_notes().values())


@notes_api.get("/notes/<note_id>")
@chio.tool("srv-notes", "read_note")
def read_note(note_id: str) -> Any:
    note = _notes().get(note_id)
    return (note, 200) if note is not None else ({"error": "not_found"}, 404)


@notes_api.post("/notes")
@chio.tool("srv-notes", "write_note")
def write_note() -> Any:
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or not isinstance(data.get("title"), str):
        return {"error": "title and body are required"}, 422
    ids = current_app.extensions["note_ids"]
    note = {"id": str(next(ids)), "title": data["title"], "body": str(data.get("body", ""))}
    _notes()[note["id"]] = note
    return {**note, "by": g.chio.subject}, 201  # g.chio: the verified caller (ChioContext)


@notes_api.delete("/notes/<note_id>")
@chio.tool("srv-notes", "delete_note", nonce=True)  # a single-use execution nonce (428)
def delete_note(note_id: str) -> Any:
    if _notes().pop(note_id, None) is None:
        return {"error": "not_found"}, 404
    return "", 204


def create_app(
    config: Mapping[str, Any] | None = None, *blueprints: Blueprint, **chio_options: Any
) -> Flask:
    """Build the notes app (plus ``blueprints``); ``init_app`` checks every setting, and a
    bad one raises, naming it. ``chio_options`` (``clock``, ``store``, ``sink``,
    ``guards``, ``render_denial``) give this app an extension of its own."""
    app = Flask("notes")
    if "CHIO_POLICY_FILE" not in os.environ:
        app.config["CHIO_POLICY_FILE"] = POLICY
    app.config.update(config or {})
    app.extensions["notes"] = {}
    app.extensions["note_ids"] = itertools.count(1)
    for blueprint in (notes_api, *blueprints):
        app.register_blueprint(blueprint)
    extension = Chio(**chio_options) if chio_options else chio
    extension.init_app(app)  # after the routes, so that the coverage table sees them all
    return app


app = create_app()
