"""The Flask example plus a blueprint with ``GET /export``, a route with no declaration."""

from flask import Blueprint

from examples.flask_app.app import create_app

extra = Blueprint("extra", __name__)


@extra.get("/export")
def export() -> list[str]:
    return []


app = create_app(None, extra)
