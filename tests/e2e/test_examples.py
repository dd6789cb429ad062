"""Each example under a real server, driven over real HTTP by the agent client."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import requests

from chio_middleware.client import ChioAuth, ChioRequestsAuth, verified_receipt
from chio_middleware.core.receipts import verify_receipt
from examples.agent import main as agent_main
from examples.agent import resolve_tool

from .servers import AGENT, KERNEL, notes_capability, running


@pytest.mark.parametrize(
    ("kind", "app"),
    [
        ("uvicorn", None),  # the Starlette example
        ("gunicorn", None),  # the Flask example
        ("uvicorn", "examples.fastapi_app.app:app"),
        ("hypercorn", "examples.fastapi_app.app:app"),
        ("gunicorn-uvicorn", "examples.starlette_app.app:app"),
    ],
)
def test_agent_scenario_over_real_http(kind: str, app: str | None, tmp_path: Path) -> None:
    cap_file = tmp_path / "cap.json"
    cap_file.write_text(json.dumps(notes_capability(int(time.time())).to_wire()))
    key_file = tmp_path / "agent.key"
    key_file.write_text(AGENT.seed_hex())
    with running(kind, tmp_path, app=app) as server:
        code = agent_main(
            [
                "--url",
                server.url,
                "--capability",
                str(cap_file),
                "--agent-key",
                str(key_file),
                "--kernel-key",
                KERNEL.public_key.hex,
            ]
        )
        assert code == 0, server.log.read_text()
        # the same through requests, and a streamed verification of each response
        auth = ChioRequestsAuth(
            capability=cap_file.read_text(),
            agent_key=AGENT,
            resolver=resolve_tool,
            kernel_key=KERNEL.public_key,
        )
        created = requests.post(
            f"{server.url}/notes", json={"title": "r", "body": "q"}, auth=auth, timeout=10
        )
        assert created.status_code == 201
        assert verified_receipt(created) is not None
        assert created.json()["by"] == AGENT.public_key.hex  # the handler's ChioContext
        if app == "examples.fastapi_app.app:app":  # /docs shows what an agent must send
            schema = requests.get(f"{server.url}/openapi.json", timeout=10)
            assert schema.status_code == 200
            operation = schema.json()["paths"]["/notes/{note_id}"]["delete"]
            assert operation["x-chio-tool"]["tool_name"] == "delete_note"
            assert operation["x-chio-tool"]["require_nonce"] is True
    # after a clean shutdown every receipt is on disk and verifies
    lines = server.receipts.read_bytes().splitlines()
    receipts = [verify_receipt(line, trusted_keys=[KERNEL.public_key]) for line in lines]
    statuses = [r.response_status for r in receipts]
    assert statuses.count(428) == 1 and 401 in statuses and 403 in statuses and 204 in statuses
    assert len(receipts) == (11 if app == "examples.fastapi_app.app:app" else 10)


def test_async_client_against_uvicorn(tmp_path: Path) -> None:
    import asyncio

    cap = notes_capability(int(time.time()))
    with running("uvicorn", tmp_path) as server:

        async def scenario() -> list[int]:
            auth = ChioAuth(
                capability=cap, agent_key=AGENT, resolver=resolve_tool, kernel_key=KERNEL.public_key
            )
            async with httpx.AsyncClient(base_url=server.url, auth=auth, timeout=10) as client:
                created = await client.post("/notes", json={"title": "a", "body": "b"})
                note = created.json()["id"]
                replies = await asyncio.gather(*(client.get(f"/notes/{note}") for _ in range(5)))
                deleted = await client.delete(f"/notes/{note}")
                return [created.status_code, *(r.status_code for r in replies), deleted.status_code]

        assert asyncio.run(scenario()) == [201, 200, 200, 200, 200, 200, 204]
