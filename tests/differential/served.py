"""The applications as real servers run them (uvicorn, hypercorn, gunicorn), by factory.

Each factory builds the app of one framework behind the middleware with the recording
guard, recording into the JSONL file that ``DIFF_RECORD`` names, on the system clock:
``uvicorn --factory tests.differential.served:starlette``,
``gunicorn 'tests.differential.served:flask()'``.
"""

from __future__ import annotations

from typing import Any

from .apps import protected
from .spec import bindings, recorder_from_env


def fastapi() -> Any:
    return protected("fastapi", recorder_from_env())


def starlette() -> Any:
    return protected("starlette", recorder_from_env())


def asgi() -> Any:
    return protected("asgi", recorder_from_env())


def flask() -> Any:
    return protected("flask", recorder_from_env())


def wsgi() -> Any:
    return protected("wsgi", recorder_from_env())


def starlette_misbound() -> Any:
    """Deliberately wrong: ``GET /files/get`` is bound as ``/files/got`` (sanity test)."""
    return protected("starlette", recorder_from_env(), routes=bindings(file_get="/files/got"))


def flask_misbound() -> Any:
    """Deliberately wrong: ``GET /files/get`` is bound as ``/files/got`` (sanity test)."""
    return protected("flask", recorder_from_env(), routes=bindings(file_get="/files/got"))


def fastapi_declared() -> Any:
    return protected("fastapi-declared", recorder_from_env())


def flask_declared() -> Any:
    return protected("flask-declared", recorder_from_env())


ASGI_APPS = ("starlette", "fastapi", "fastapi_declared", "asgi", "starlette_misbound")
WSGI_APPS = ("flask", "flask_declared", "wsgi", "flask_misbound")


def asgi_by_host() -> Any:
    """One ASGI server process for every ASGI app: the ``Host`` header picks the app
    (``Host: fastapi``); the path reaches it unchanged. Lifespan is answered here."""
    apps = {name: globals()[name]() for name in ASGI_APPS}

    async def dispatch(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
        await apps[host](scope, receive, send)

    return dispatch


def wsgi_by_host() -> Any:
    """One WSGI server process for every WSGI app, picked by the ``Host`` header."""
    apps = {name: globals()[name]() for name in WSGI_APPS}

    def dispatch(environ: dict[str, Any], start_response: Any) -> Any:
        return apps[environ.get("HTTP_HOST", "")](environ, start_response)

    return dispatch
