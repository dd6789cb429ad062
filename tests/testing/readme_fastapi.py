from fastapi import FastAPI

from chio_middleware import ChioSettings
from chio_middleware.integrations import tool
from chio_middleware.integrations.fastapi import Chio


def create_app(settings: ChioSettings | None = None) -> FastAPI:
    app = FastAPI()

    @app.post("/notes", status_code=201)
    @tool("srv-notes", "write_note")
    async def write_note(note: dict[str, str]) -> dict[str, str]:
        return {"title": note["title"]}

    Chio(app, settings=settings)
    return app
