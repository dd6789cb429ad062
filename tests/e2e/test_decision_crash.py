"""Decision mode under real servers: a handler that kills its worker after a side effect."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.middleware.harness import agent_headers

from .servers import KERNEL, notes_capability, running
from .test_workers import send

CLI = str(Path(sys.executable).parent / "chio-middleware")
ROUTES = json.dumps(
    [{"method": "POST", "path": "/jobs", "tool_server": "srv-jobs", "tool_name": "run_job"}]
)
APPS = {"uvicorn": "tests.e2e.crash_app:asgi_app", "gunicorn": "tests.e2e.crash_app:wsgi_app"}


@pytest.mark.parametrize("kind", sorted(APPS))
def test_a_killed_worker_leaves_its_decision_receipt(kind: str, tmp_path: Path) -> None:
    effect = tmp_path / "side-effect.txt"
    env = {
        "CHIO_ROUTES": ROUTES,
        "CHIO_RECEIPT_MODE": "decision",
        "CRASH_SIDE_EFFECT": str(effect),
    }
    with running(kind, tmp_path, extra_env=env, app=APPS[kind]) as server:
        assert send(server.url, "GET", "/health", {})[0] == 200
        now = int(time.time())
        grants = [{"server_id": "srv-jobs", "tool_name": "run_job", "operations": ["invoke"]}]
        cap = notes_capability(now, grants=grants)
        body = b'{"job":"transfer"}'
        headers = agent_headers(
            "POST", "/jobs", body, cap=cap, tool=("srv-jobs", "run_job"), issued_at=now
        )
        with pytest.raises((ConnectionError, OSError)):
            send(server.url, "POST", "/jobs", headers, body)  # the worker dies mid-request
    assert effect.read_bytes() == body + b"\n"  # the side effect happened
    lines = server.receipts.read_bytes().splitlines()
    receipts = [json.loads(line) for line in lines]
    decision = receipts[-1]
    assert decision["metadata"]["chio_http_status_scope"] == "decision"
    assert decision["route_pattern"] == "/jobs" and decision["verdict"] == {"verdict": "allow"}
    assert not any(
        r["metadata"].get("chio_decision_receipt_id") == decision["id"] for r in receipts
    )
    done = subprocess.run(
        [CLI, "verify", str(server.receipts), "--kernel-key", KERNEL.public_key.hex],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr  # the chain still verifies
    assert f"{server.receipts}: OK:" in done.stdout
    assert "1 decision receipt(s) without a final receipt" in done.stdout
    assert f"decision receipt {decision['id']} (POST /jobs" in done.stdout
