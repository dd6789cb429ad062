"""The applications as real servers run them (uvicorn, hypercorn, gunicorn), by factory.

Each factory builds the app of one framework behind the middleware with the recording
guard, recording into the JSONL file that ``DIFF_RECORD`` names, on the system clock:
``uvicorn --factory tests.differential.served:starlette``,
``gunicorn 'tests.differential.served:flask()'``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .apps import protected
from .spec import TOOLS, bindings, recorder_from_env


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
    """Deliberately wrong: ``GET /files/get`` is left unbound (sanity test)."""
    return protected("starlette", recorder_from_env(), routes=unbinding("file_get"))


def flask_misbound() -> Any:
    """Deliberately wrong: ``GET /files/get`` is left unbound (sanity test)."""
    return protected("flask", recorder_from_env(), routes=unbinding("file_get"))


def fastapi_declared() -> Any:
    return protected("fastapi-declared", recorder_from_env())


def flask_declared() -> Any:
    return protected("flask-declared", recorder_from_env())


def unbinding(name: str) -> Any:
    """Every binding but ``name``'s."""
    return bindings([t for t in TOOLS if t.name != name])


ASGI_APPS = ("starlette", "fastapi", "fastapi_declared", "asgi", "starlette_misbound")
WSGI_APPS = ("flask", "flask_declared", "wsgi", "flask_misbound")


def asgi_by_host() -> Any:
    """One ASGI server process for every ASGI app: the ``Host`` header picks the app
    (``Host: fastapi``); the path reaches it unchanged. Each app's lifespan starts with
    the server's (the middleware checks its bindings then); one failing fails it."""
    apps = {name: globals()[name]() for name in ASGI_APPS}
    lifespans: list[Any] = []

    async def start(app: Any) -> str | None:
        """One app's lifespan startup (left running): its failure message, if any."""
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await inbox.put({"type": "lifespan.startup"})
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        task = asyncio.ensure_future(app(scope, inbox.get, outbox.put))
        lifespans.append(task)
        reply = asyncio.ensure_future(outbox.get())
        await asyncio.wait([task, reply], return_when=asyncio.FIRST_COMPLETED)
        if not reply.done():  # the app does not speak lifespan
            reply.cancel()
            return None
        message = reply.result()
        return None if message["type"].endswith(".complete") else str(message.get("message"))

    async def dispatch(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            failures = [f for f in [await start(app) for app in apps.values()] if f]
            if failures:
                await send({"type": "lifespan.startup.failed", "message": "; ".join(failures)})
                return
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
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
