"""Outside review (2026-12-01, second): framework values of types no check reads.

A framework's converters hand the handler objects, not only text: Werkzeug's and
Starlette's ``uuid`` converters a ``UUID``, a custom converter whatever its ``to_python``
returns, FastAPI's ``Header()`` a ``Path`` or a ``datetime``. The review found such a value
passing ``path_prefix`` and ``forbidden_paths`` unseen (``scalar_leaves`` skipped it).
Now a UUID or a path is checked as its text, and any other type is refused wherever a
constraint or an argument-reading guard applies. Each case runs the real framework and
records what the handler read.
"""

import datetime
import decimal
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import flask
import pytest
from fastapi import FastAPI, Header
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.routing import BaseConverter, PathConverter

from chio_middleware.core.clock import FixedClock
from chio_middleware.integrations import tool
from chio_middleware.integrations.fastapi import Chio as FastAPIChio
from chio_middleware.integrations.flask import Chio as FlaskChio
from chio_middleware.integrations.starlette import Chio as StarletteChio

from ..middleware.harness import NOW, agent_headers, capability, settings

ran: list[Any] = []


class Opaque:
    """What a custom converter may return: an object with no text a check could read."""

    def __init__(self, text: str) -> None:
        self.text = text


def _grant(constraint: dict[str, Any] | None) -> list[dict[str, Any]]:
    grant: dict[str, Any] = {"server_id": "srv-files", "tool_name": "read", "operations": ["invoke"]}
    if constraint is not None:
        grant["constraints"] = [constraint]
    return [grant]


WORKSPACE = {"type": "path_prefix", "value": "/workspace/"}
ZERO_IDS = {"type": "regex_match", "value": "^00000000-"}


# -- the apps: one route whose parameter the converter makes into ``make(text)`` ----------


def _flask_app(make: Callable[[str], Any], kind: str) -> Callable[[str, dict[str, str]], int]:
    class Custom(BaseConverter if kind == "segment" else PathConverter):  # type: ignore[misc]
        def to_python(self, value: str) -> Any:
            return make(value)

    app = flask.Flask(__name__)
    app.url_map.converters["custom"] = Custom

    @app.get("/files/<custom:target>")
    @tool("srv-files", "read")
    def read(target: Any) -> Any:
        ran.append(getattr(target, "text", str(target)))
        return {"ok": True}

    FlaskChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    client = app.test_client()
    return lambda url, headers: client.get(url, headers=headers).status_code


def _starlette_app(make: Callable[[str], Any], kind: str) -> Callable[[str, dict[str, str]], int]:
    class Custom(Convertor[Any]):
        regex = "[^/]+" if kind == "segment" else ".*"

        def convert(self, value: str) -> Any:
            return make(value)

        def to_string(self, value: Any) -> str:
            return str(value)

    name = f"chio_review_{kind}_{id(make)}"
    register_url_convertor(name, Custom())

    async def read(request: Request) -> JSONResponse:
        target = request.path_params["target"]
        ran.append(getattr(target, "text", str(target)))
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route(f"/files/{{target:{name}}}", tool("srv-files", "read")(read))])
    StarletteChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))

    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: the sink stays open
    return lambda url, headers: client.get(url, headers=headers).status_code


def _call(app: Callable[[str, dict[str, str]], int], url: str, grant: list[dict[str, Any]]) -> int:
    ran.clear()
    headers = agent_headers("GET", url, cap=capability(grant), tool=("srv-files", "read"))
    return app(url, headers)


FRAMEWORKS = {"flask": _flask_app, "starlette": _starlette_app}


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda text: PurePosixPath("/" + text), id="PurePosixPath"),
        pytest.param(lambda text: Path("/" + text), id="Path"),
    ],
)
def test_a_path_object_is_checked_as_the_path_it_names(
    framework: str, make: Callable[[str], Any]
) -> None:
    app = FRAMEWORKS[framework](make, "path")
    assert _call(app, "/files/etc/shadow?ref=/workspace/x", _grant(WORKSPACE)) == 403
    assert ran == []
    assert _call(app, "/files/workspace/notes.txt", _grant(WORKSPACE)) == 200
    assert ran == ["/workspace/notes.txt"]
    # The default forbidden_paths guard reads it too, with no constraint in the grant.
    assert _call(app, "/files/etc/shadow", _grant(None)) == 403
    assert ran == []


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_a_uuid_is_checked_as_its_text(framework: str) -> None:
    app = FRAMEWORKS[framework](uuid.UUID, "segment")
    other = "11111111-2222-4333-8444-555555555555"
    assert _call(app, f"/files/{other}", _grant(ZERO_IDS)) == 403
    assert ran == []
    zero = "00000000-2222-4333-8444-555555555555"
    assert _call(app, f"/files/{zero}", _grant(ZERO_IDS)) == 200
    assert ran == [zero]


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(Opaque, id="object"),
        pytest.param(lambda text: decimal.Decimal(len(text)), id="Decimal"),
        pytest.param(lambda text: text.encode(), id="bytes"),
        pytest.param(lambda text: {"path": Opaque(text)}, id="nested"),
        pytest.param(lambda text: {1: text}, id="int-keyed"),
    ],
)
def test_a_value_no_check_reads_is_refused_where_checks_apply(
    framework: str, make: Callable[[str], Any]
) -> None:
    app = FRAMEWORKS[framework](make, "segment")
    assert _call(app, "/files/etc", _grant(WORKSPACE)) == 403  # a constraint applies
    assert _call(app, "/files/etc", _grant(None)) == 403  # the default guards read arguments
    assert ran == []


def test_a_value_no_check_reads_passes_where_nothing_reads_arguments() -> None:
    app = flask.Flask(__name__)

    class Custom(BaseConverter):
        def to_python(self, value: str) -> Any:
            return Opaque(value)

    app.url_map.converters["custom"] = Custom

    @app.get("/files/<custom:target>")
    @tool("srv-files", "read")
    def read(target: Opaque) -> Any:
        ran.append(target.text)
        return {"ok": True}

    quiet = settings(routes=[], forbidden_paths=[], secret_leak_guard=False)
    FlaskChio(app, settings=quiet, clock=FixedClock(NOW))
    client = app.test_client()
    ran.clear()
    url = "/files/etc"
    headers = agent_headers("GET", url, cap=capability(_grant(None)), tool=("srv-files", "read"))
    response = client.get(url, headers=headers)
    assert response.status_code == 200, response.get_data()
    assert ran == ["etc"]


@pytest.mark.parametrize(
    ("annotation", "value", "expected"),
    [
        (Path, "/etc/ssh", 403),  # checked as its text: outside /workspace/
        (Path, "/workspace/ssh", 200),
        (uuid.UUID, "00000000-2222-4333-8444-555555555555", 200),  # its text: not a path
        (datetime.datetime, "2026-12-01T00:00:00", 403),  # no check reads a datetime
        (decimal.Decimal, "1.5", 403),
    ],
)
def test_fastapi_header_values_are_checked_or_refused(
    annotation: Any, value: str, expected: int
) -> None:
    app = FastAPI()

    @app.get("/files/read")
    @tool("srv-files", "read")
    async def read(path: str, x_workdir: Annotated[annotation, Header()]) -> dict[str, Any]:
        ran.append((path, str(x_workdir)))
        return {"ok": True}

    FastAPIChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    url = "/files/read?path=/workspace/a"
    ran.clear()
    headers = agent_headers("GET", url, cap=capability(_grant(WORKSPACE)), tool=("srv-files", "read"))
    headers["x-workdir"] = value
    with TestClient(app, raise_server_exceptions=False) as client:
        status = client.get(url, headers=headers).status_code
    assert status == expected, (status, ran)
    assert (ran == []) == (expected == 403)


def test_a_fastapi_header_model_is_checked_as_its_fields() -> None:
    from pydantic import BaseModel

    class Common(BaseModel):
        x_workdir: str

    app = FastAPI()

    @app.get("/files/read")
    @tool("srv-files", "read")
    async def read(path: str, h: Annotated[Common, Header()]) -> dict[str, Any]:
        ran.append(h.x_workdir)
        return {"ok": True}

    FastAPIChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    client = TestClient(app, raise_server_exceptions=False)
    url = "/files/read?path=/workspace/a"
    for workdir, expected in (("/workspace/w", 200), ("/etc/ssh", 403)):
        ran.clear()
        headers = agent_headers(
            "GET", url, cap=capability(_grant(WORKSPACE)), tool=("srv-files", "read")
        )
        headers["x-workdir"] = workdir
        assert client.get(url, headers=headers).status_code == expected
        assert ran == ([workdir] if expected == 200 else [])
