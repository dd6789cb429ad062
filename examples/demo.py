"""`make demo`: the whole product end to end on embedded defaults.

1. generate development keys (an issuer, an agent, the middleware's kernel key);
2. issue a capability for the notes tools to the agent;
3. start the Starlette example under uvicorn on 127.0.0.1 (a free port, pre-bound here and
   handed to uvicorn, so there is no start-up race and no polling);
4. run the agent (examples/agent.py) against it;
5. stop the server, then verify the JSONL receipt log and print it with the CLI
   (``chio-middleware verify`` and ``chio-middleware tail``); exit 0.

Everything lands in ./demo-state/ (re-created on each run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from chio_middleware.core.capability import sign_capability
from chio_middleware.core.crypto import SigningKey

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / "demo-state"


def write_key(path: Path, key: SigningKey) -> None:
    path.write_text(key.seed_hex() + "\n")
    path.chmod(0o600)


def main() -> int:
    """Run the demo; non-zero when any step fails."""
    shutil.rmtree(STATE, ignore_errors=True)
    STATE.mkdir()
    issuer, agent, kernel = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    for name, key in (("issuer", issuer), ("agent", agent), ("kernel", kernel)):
        write_key(STATE / f"{name}.key", key)
    print(
        f"[1] keys in {STATE.relative_to(ROOT)}/: issuer {issuer.public_key.hex[:16]}..., "
        f"agent {agent.public_key.hex[:16]}..., kernel {kernel.public_key.hex[:16]}..."
    )

    now = int(time.time())
    tools = ["list_notes", "read_note", "write_note", "delete_note"]
    token = sign_capability(
        issuer,
        {
            "id": f"cap-demo-{now}",
            "issuer": issuer.public_key.hex,
            "subject": agent.public_key.hex,
            "scope": {
                "grants": [
                    {"server_id": "srv-notes", "tool_name": tool, "operations": ["invoke"]}
                    for tool in tools
                ]
            },
            "issued_at": now - 5,
            "expires_at": now + 3600,
        },
    )
    (STATE / "capability.json").write_text(json.dumps(token.to_wire(), indent=2) + "\n")
    print(f"[2] capability {token.id} grants srv-notes/{{{','.join(tools)}}} for 1 hour")

    receipts = STATE / "receipts.jsonl"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    env = {
        **os.environ,
        "CHIO_SIGNING_KEY_FILE": str(STATE / "kernel.key"),
        "CHIO_TRUSTED_ISSUERS": json.dumps([issuer.public_key.hex]),
        "CHIO_RECEIPT_SINK": f"jsonl:{receipts}",
        "CHIO_RECEIPT_FSYNC": "always",
        "PYTHONPATH": str(ROOT),
    }
    with open(STATE / "server.log", "wb") as server_log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "examples.starlette_app.app:app",
                "--fd",
                str(listener.fileno()),
                "--log-level",
                "warning",
            ],
            env=env,
            cwd=ROOT,
            pass_fds=(listener.fileno(),),
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
    listener.close()
    print(f"[3] Starlette example under uvicorn on http://127.0.0.1:{port} (pid {server.pid})")
    try:
        print("[4] the agent calls the tools:")
        agent_run = subprocess.run(
            [
                sys.executable,
                str(ROOT / "examples" / "agent.py"),
                "--url",
                f"http://127.0.0.1:{port}",
                "--capability",
                str(STATE / "capability.json"),
                "--agent-key",
                str(STATE / "agent.key"),
                "--kernel-key",
                kernel.public_key.hex,
            ],
            env=env,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    finally:
        server.send_signal(signal.SIGINT)  # clean shutdown: lifespan flushes the sink
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"[5] the receipt log {receipts.relative_to(ROOT)}, checked with the CLI:")
    cli = str(Path(sys.executable).parent / "chio-middleware")
    kernel_hex = kernel.public_key.hex
    verified = subprocess.run(
        [cli, "verify", str(receipts), "--kernel-key", kernel_hex], check=False
    )
    subprocess.run(
        [cli, "tail", "-n", "all", "--verify", "--kernel-key", kernel_hex, str(receipts)],
        check=False,
    )
    lines = receipts.read_bytes().splitlines() if receipts.exists() else []
    if verified.returncode != 0:
        print("demo FAILED: the receipt log does not verify")
        return 1
    if agent_run.returncode != 0 or not lines:
        print("demo FAILED (see demo-state/server.log)")
        return 1
    print("demo OK. Next: `make test` runs the whole suite.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
