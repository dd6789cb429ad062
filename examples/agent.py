"""An agent calling the notes service as tools, through chio_middleware.client.

    python examples/agent.py --url http://127.0.0.1:8000 --capability cap.json \\
        --agent-key agent.key --kernel-key <hex>

It makes allowed calls, a call without a capability, a call outside its grant, a replayed
DPoP proof and a delete that needs an execution nonce (answered automatically after the
428 challenge), prints each outcome with its receipt id, and exits 1 if any outcome is not
the expected one. Works against the Starlette, FastAPI and Flask examples alike.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import httpx

from chio_middleware.client import ChioAuth, verified_receipt

NOTES_TOOLS = {
    ("GET", "/notes"): "list_notes",
    ("POST", "/notes"): "write_note",
    ("GET", "/notes/*"): "read_note",
    ("DELETE", "/notes/*"): "delete_note",
}


def resolve_tool(method: str, path: str) -> tuple[str, str]:
    """Which tool of srv-notes a request calls (the tools the examples declare on their routes)."""
    key = (
        (method, path) if (method, path) in NOTES_TOOLS else (method, path.rsplit("/", 1)[0] + "/*")
    )
    return "srv-notes", NOTES_TOOLS.get(key, "unknown")


class Run:
    """Collects outcomes; every line shows the status, the error code and the receipt id."""

    def __init__(self) -> None:
        self.failures = 0

    def report(
        self, label: str, response: httpx.Response, expected: int, code: str | None = None
    ) -> None:
        error = _error_code(response)
        ok = response.status_code == expected and (code is None or error == code)
        self.failures += not ok
        receipt = response.headers.get("x-chio-receipt-id", "-")
        outcome = f"{response.status_code}" + (f" {error}" if error else "")
        mark = "ok  " if ok else "FAIL"
        print(f"{mark} {label:44s} -> {outcome:30s} receipt {receipt}")


def _error_code(response: httpx.Response) -> str | None:
    if response.headers.get("content-type", "").startswith("application/json"):
        try:
            body: Any = response.json()
        except ValueError:
            return None
        if isinstance(body, dict) and isinstance(body.get("error"), str) and "status" in body:
            return str(body["error"])
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the scenario; exit status 0 when every outcome is the expected one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL of the notes service")
    parser.add_argument("--capability", required=True, type=Path, help="capability JSON file")
    parser.add_argument("--agent-key", required=True, type=Path, help="agent seed (hex) file")
    parser.add_argument("--kernel-key", required=True, help="the middleware's public key (hex)")
    args = parser.parse_args(argv)

    capability = json.loads(args.capability.read_text())
    agent_key = args.agent_key.read_text().strip()
    auth = ChioAuth(
        capability=capability,
        agent_key=agent_key,
        resolver=resolve_tool,
        kernel_key=args.kernel_key,
    )
    run = Run()
    with (
        httpx.Client(base_url=args.url, auth=auth, timeout=10) as agent,
        httpx.Client(base_url=args.url, timeout=10) as anonymous,
    ):
        created = agent.post("/notes", json={"title": "groceries", "body": "milk, eggs"})
        run.report("write_note  POST /notes", created, 201)
        note_id = created.json()["id"] if created.status_code == 201 else "1"
        run.report("list_notes  GET /notes", agent.get("/notes"), 200)
        read = agent.get(f"/notes/{note_id}")
        run.report(f"read_note   GET /notes/{note_id}", read, 200)
        if verified_receipt(read) is None:
            print("FAIL the response receipt was not verified against the kernel key")
            run.failures += 1

        run.report(
            "no capability  POST /notes",
            anonymous.post("/notes", json={"title": "x"}),
            401,
            "chio_capability_required",
        )
        outside = agent.post("/chio/tools/srv-admin/drop_all", json={"confirm": True})
        run.report("outside the grant  srv-admin/drop_all", outside, 403, "chio_access_denied")

        first = agent.get("/notes")
        replayed = anonymous.get(
            "/notes",
            headers={
                k: v for k, v in first.request.headers.items() if k.lower().startswith("x-chio-")
            },
        )
        run.report("replayed DPoP proof  GET /notes", replayed, 401, "chio_replay_detected")

        challenges: list[int] = []
        deleted = agent.delete(f"/notes/{note_id}", extensions={})
        challenges = [r.status_code for r in deleted.history]
        print(f"     delete_note: challenge statuses seen before the retry: {challenges or 'none'}")
        run.report(f"delete_note DELETE /notes/{note_id} (after 428)", deleted, 204)
    print(
        f"{'all outcomes as expected' if not run.failures else f'{run.failures} unexpected outcome(s)'}"
    )
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
