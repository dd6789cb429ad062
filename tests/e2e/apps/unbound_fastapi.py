"""The FastAPI example plus ``GET /export``, a route with no declaration."""

from examples.fastapi_app.app import create_app

app = create_app()


@app.get("/export")
async def export() -> list[str]:
    return []
