"""Outside review (2026-12-01, second): the body FastAPI hands a body field.

FastAPI decodes a request body as JSON only for ``application/json`` and
``application/*+json`` (and, with ``strict_content_type`` off, no Content-Type); for any
other type a body field gets the bytes, and a single ``str`` ``Body()`` takes the whole
text. The argument view read the JSON object's members whatever the type, so the review
wrote a path under /workspace/ as the checked member and had the handler use the whole
text. Now a body FastAPI hands over as bytes is opaque to the checks and refused wherever
they apply. The table sends one body under each Content-Type to each kind of body field
and records what the handler read: it is either refused or reads what was checked.
"""

from typing import Annotated, Any

import pytest
from fastapi import Body, FastAPI
from pydantic import BaseModel
from starlette.testclient import TestClient

from chio_middleware.core.clock import FixedClock
from chio_middleware.integrations import tool
from chio_middleware.integrations.fastapi import Chio as FastAPIChio

from ..middleware.harness import NOW, agent_headers, capability, settings

ran: list[Any] = []
INSIDE = "/workspace/a.txt"
GRANTS = [
    {
        "server_id": "srv-files",
        "tool_name": "write",
        "operations": ["invoke"],
        "constraints": [
            {"type": "path_prefix", "value": "/workspace/"},
            {"type": "max_length", "value": 64},
        ],
    }
]


class Target(BaseModel):
    path: str


def _app(kind: str) -> FastAPI:
    app = FastAPI()
    route = app.post("/files/write")
    declare = tool("srv-files", "write")

    if kind == "str":

        async def endpoint(path: Annotated[str, Body()]) -> Any:
            ran.append(path)
            return {"ok": True}

    elif kind == "bytes":

        async def endpoint(path: Annotated[bytes, Body()]) -> Any:  # type: ignore[misc]
            ran.append(path.decode())
            return {"ok": True}

    elif kind == "Any":

        async def endpoint(path: Annotated[Any, Body()]) -> Any:  # type: ignore[misc]
            ran.append(path if isinstance(path, str) else path.get("path"))
            return {"ok": True}

    elif kind == "model":

        async def endpoint(target: Target) -> Any:  # type: ignore[misc]
            ran.append(target.path)
            return {"ok": True}

    else:  # two fields: FastAPI embeds them, each read from the object's members

        async def endpoint(  # type: ignore[misc]
            path: Annotated[str, Body()], mode: Annotated[str, Body()] = "w"
        ) -> Any:
            ran.append(path)
            return {"ok": True}

    route(declare(endpoint))
    FastAPIChio(app, settings=settings(routes=[]), clock=FixedClock(NOW))
    return app


JSON_BODY = b'{"path":"/workspace/a.txt","x/../../../../../../../../../tmp/pwned":0}'
FORM_BODY = b"path=/workspace/a.txt&x%2F..%2F..%2F..%2Fetc%2Fcron.d%2Fx="
CONTENT_TYPES = {
    "text/plain": (JSON_BODY, "text/plain"),
    "no Content-Type": (JSON_BODY, None),
    "application/xml": (JSON_BODY, "application/xml"),
    "text/json": (JSON_BODY, "text/json"),
    "application/jsonx": (JSON_BODY, "application/jsonx"),
    "form": (FORM_BODY, "application/x-www-form-urlencoded"),
    "application/json": (JSON_BODY, "application/json"),
    "application/json; charset=utf-8": (JSON_BODY, "application/json; charset=utf-8"),
    "application/merge-patch+json": (JSON_BODY, "application/merge-patch+json"),
}
KINDS = ["str", "bytes", "Any", "model", "embedded"]
JSON_TYPES = {"application/json", "application/json; charset=utf-8", "application/merge-patch+json"}


def _post(client: TestClient, body: bytes, content_type: str | None) -> int:
    return _send(client, body, content_type).status_code


def _send(client: TestClient, body: bytes, content_type: str | None) -> Any:
    url = "/files/write"
    headers = agent_headers(
        "POST", url, body, cap=capability(GRANTS), tool=("srv-files", "write"), json_body=False
    )
    headers.pop("content-type", None)
    headers.pop("Content-Type", None)
    if content_type is not None:
        headers["content-type"] = content_type
    return client.post(url, content=body, headers=headers)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("content_type", sorted(CONTENT_TYPES))
def test_a_body_field_reads_what_was_checked_or_is_refused(kind: str, content_type: str) -> None:
    ran.clear()
    body, header = CONTENT_TYPES[content_type]
    client = TestClient(_app(kind), raise_server_exceptions=False)
    response = _send(client, body, header)
    status = response.status_code
    assert status >= 400 or ran == [INSIDE], (status, ran)
    if content_type in JSON_TYPES:  # FastAPI reads the members: checked, or its own 422
        assert status in (200, 422), (status, response.text)
    else:  # FastAPI hands the bytes over: the middleware refuses, whatever the field
        assert status == 403, (status, response.text)
        assert response.json()["error"] == "chio_access_denied"
        assert ran == []


@pytest.mark.parametrize("kind", KINDS)
def test_json_bodies_are_still_checked_and_admitted(kind: str) -> None:
    ran.clear()
    client = TestClient(_app(kind), raise_server_exceptions=False)
    if kind in ("str", "bytes", "Any"):  # one field, not embedded: the body is the value
        good, bad = b'"/workspace/a.txt"', b'"/etc/shadow"'
    else:
        good, bad = b'{"path":"/workspace/a.txt"}', b'{"path":"/etc/shadow"}'
    assert _post(client, bad, "application/json") == 403
    assert ran == []
    status = _post(client, good, "application/json")
    if kind in ("str", "bytes", "Any"):
        # A JSON string body is not an object: no constraint can see into it (refused).
        assert status == 403 and ran == []
    else:
        assert status == 200 and ran == [INSIDE]
