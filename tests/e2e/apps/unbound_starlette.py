"""The Starlette example plus ``GET /export``, a route with no declaration."""

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from examples.starlette_app.app import create_app


async def export(request: Request) -> Response:
    return JSONResponse([])


app = create_app()
app.add_route("/export", export)
