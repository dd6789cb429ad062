import flask

from chio_middleware import ChioSettings
from chio_middleware.integrations import tool
from chio_middleware.wsgi import ChioWSGIMiddleware


def create_app(settings: ChioSettings | None = None) -> flask.Flask:
    app = flask.Flask(__name__)

    @app.post("/notes")
    @tool("srv-notes", "write_note")
    def write_note() -> tuple[dict[str, str], int]:
        return {"title": flask.request.get_json()["title"]}, 201

    app.wsgi_app = ChioWSGIMiddleware(app.wsgi_app, settings=settings)
    return app
