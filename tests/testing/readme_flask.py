import flask

from chio_middleware import ChioSettings
from chio_middleware.integrations import tool
from chio_middleware.integrations.flask import Chio


def create_app(settings: ChioSettings | None = None) -> flask.Flask:
    app = flask.Flask(__name__)

    @app.post("/notes")
    @tool("srv-notes", "write_note")
    def write_note() -> tuple[dict[str, str], int]:
        return {"title": flask.request.get_json()["title"]}, 201

    Chio(app, settings=settings)
    return app
