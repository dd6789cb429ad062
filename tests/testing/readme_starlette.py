from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chio_middleware import ChioSettings
from chio_middleware.asgi import ChioMiddleware
from chio_middleware.integrations import tool


@tool("srv-notes", "write_note")
async def write_note(request: Request) -> JSONResponse:
    return JSONResponse({"title": (await request.json())["title"]}, status_code=201)


def create_app(settings: ChioSettings | None = None) -> Starlette:
    app = Starlette(routes=[Route("/notes", write_note, methods=["POST"])])
    app.add_middleware(ChioMiddleware, settings=settings)
    return app
