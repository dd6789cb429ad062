from fastapi import FastAPI

from chio_middleware import ChioSettings
from chio_middleware.asgi import ChioMiddleware
from chio_middleware.integrations import tool


def create_app(settings: ChioSettings | None = None) -> FastAPI:
    app = FastAPI()

    @app.post("/notes", status_code=201)
    @tool("srv-notes", "write_note")
    async def write_note(note: dict[str, str]) -> dict[str, str]:
        return {"title": note["title"]}

    app.add_middleware(ChioMiddleware, settings=settings)
    return app
