from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chio_middleware import ChioSettings
from chio_middleware.integrations import tool
from chio_middleware.integrations.starlette import Chio


@tool("srv-notes", "write_note")
async def write_note(request: Request) -> JSONResponse:
    return JSONResponse({"title": (await request.json())["title"]}, status_code=201)


def create_app(settings: ChioSettings | None = None) -> Starlette:
    app = Starlette(routes=[Route("/notes", write_note, methods=["POST"])])
    Chio(app, settings=settings)
    return app
