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
