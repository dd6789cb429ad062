"""``proof``: headers that the middleware's DPoP verification accepts for that request."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from chio_middleware.core.canonical import canonical_json
from chio_middleware.core.capability import sign_capability
from chio_middleware.core.dpop import DpopBinding, verify_dpop_proof
from chio_middleware.core.encoding import decode_header_object
from chio_middleware.core.errors import DpopInvalid
from chio_middleware.core.models import NonceBinding
from chio_middleware.core.nonce import mint_execution_nonce
from chio_middleware.core.replay import MemoryReplayStore
from tests.cli.conftest import NOW, run, run_script
from tests.sinks.logmaker import AGENT, KERNEL
from tests.vectors import cases


def capability_file(tmp_path: Path, *grants: tuple[str, str]) -> Path:
    token = sign_capability(
        KERNEL,
        {
            "id": "cap-7",
            "issuer": KERNEL.public_key.hex,
            "subject": AGENT.public_key.hex,
            "scope": {
                "grants": [
                    {"server_id": s, "tool_name": t, "operations": ["invoke"]} for s, t in grants
                ]
            },
            "issued_at": int(NOW) - 10,
            "expires_at": int(NOW) + 3600,
        },
    )
    path = tmp_path / "cap.json"
    path.write_bytes(canonical_json(token.to_wire()))
    return path


def headers(text: str) -> dict[str, str]:
    pairs = [line.split(": ", 1) for line in text.splitlines()]
    return {name: value for name, value in pairs}


def proof_for(keys: dict[str, Path], cap: Path, *argv: str) -> dict[str, str]:
    result = run("proof", "--agent-key", str(keys["agent"]), "--capability", str(cap), *argv)
    assert result.status == 0, result.err
    return headers(result.out)


def accept(proof_header: str, server: str, tool: str, action_hash: str) -> None:
    """What the middleware does with the proof (PROTOCOL.md 3), at the CLI's clock."""
    verify_dpop_proof(
        decode_header_object(proof_header),
        subject=AGENT.public_key.hex,
        expected=DpopBinding("cap-7", server, tool, action_hash),
        now=int(NOW),
        replay_store=MemoryReplayStore(),
    )


@pytest.mark.parametrize("case", cases("chio_http/request_hash_v1.json"))
def test_the_proof_is_bound_to_the_request_binding_hash_of_the_vectors(
    keys: dict[str, Path], tmp_path: Path, case: dict
) -> None:
    cap = capability_file(tmp_path, ("notes", "write"))
    body = base64.b64decode(case["body_b64"])
    data_file = tmp_path / "body"
    data_file.write_bytes(body)
    data = ["--data", f"@{data_file}"] if body else []
    url = "https://tools.example" + case["url"]
    found = proof_for(keys, cap, "--method", case["method"].lower(), "--url", url, *data)
    assert list(found) == ["X-Chio-Capability", "X-Chio-DPoP"]
    assert decode_header_object(found["X-Chio-Capability"])["id"] == "cap-7"
    proof = decode_header_object(found["X-Chio-DPoP"])
    assert proof["body"]["action_hash"] == case["request_binding_hash"]
    assert proof["body"]["issued_at"] == NOW
    tool = ("srv-files", "file_read") if "/chio/tools/" in url else ("notes", "write")
    accept(found["X-Chio-DPoP"], *tool, case["request_binding_hash"])


def test_a_proof_for_another_request_is_refused(keys: dict[str, Path], tmp_path: Path) -> None:
    cap = capability_file(tmp_path, ("notes", "write"))
    found = proof_for(keys, cap, "--method", "POST", "--url", "/notes", "--data", '{"a":1}')
    [case] = [c for c in cases("chio_http/request_hash_v1.json") if c.id == "get_no_query"]
    with pytest.raises(DpopInvalid, match="action_hash"):
        accept(found["X-Chio-DPoP"], "notes", "write", case.values[0]["request_binding_hash"])


def test_the_tool_comes_from_a_chio_tools_url_before_the_grant(
    keys: dict[str, Path], tmp_path: Path
) -> None:
    cap = capability_file(tmp_path, ("notes", "write"))
    found = proof_for(keys, cap, "--method", "POST", "--url", "/api/chio/tools/fs%20x/read?x=1")
    body = decode_header_object(found["X-Chio-DPoP"])["body"]
    assert (body["tool_server"], body["tool_name"]) == ("fs x", "read")


def test_flags_name_the_tool_when_the_grant_is_not_one_concrete_tool(
    keys: dict[str, Path], tmp_path: Path
) -> None:
    cap = capability_file(tmp_path, ("notes", "*"))
    result = run(
        "proof", "--agent-key", str(keys["agent"]), "--capability", str(cap),
        "--method", "GET", "--url", "/notes/1",
    )  # fmt: skip
    assert result.status == 2
    assert "give --tool-server and --tool-name" in result.err
    found = proof_for(
        keys, cap, "--method", "GET", "--url", "/notes/1", "--tool-server", "notes",
        "--tool-name", "read",
    )  # fmt: skip
    body = decode_header_object(found["X-Chio-DPoP"])["body"]
    assert (body["tool_server"], body["tool_name"]) == ("notes", "read")
    result = run(
        "proof", "--agent-key", str(keys["agent"]), "--capability", str(cap),
        "--method", "GET", "--url", "/notes/1", "--tool-name", "read",
    )  # fmt: skip
    assert result.status == 2
    assert "give both --tool-server and --tool-name" in result.err


def test_a_tool_without_a_grant_gets_a_warning(keys: dict[str, Path], tmp_path: Path) -> None:
    cap = capability_file(tmp_path, ("notes", "write"))
    result = run(
        "proof", "--agent-key", str(keys["agent"]), "--capability", str(cap),
        "--method", "GET", "--url", "/chio/tools/mail/send",
    )  # fmt: skip
    assert result.status == 0
    assert "warning: the capability has no invoke grant for mail/send" in result.err


def test_an_execution_nonce_is_passed_through(keys: dict[str, Path], tmp_path: Path) -> None:
    cap = capability_file(tmp_path, ("notes", "write"))
    binding = NonceBinding(
        subject_id=AGENT.public_key.hex,
        capability_id="cap-7",
        tool_server="notes",
        tool_name="write",
        parameter_hash="00" * 32,
    )
    nonce = mint_execution_nonce(KERNEL, binding=binding, now=int(NOW))
    raw = canonical_json(nonce.to_wire()).decode()
    found = proof_for(keys, cap, "--method", "GET", "--url", "/x", "--execution-nonce", raw)
    assert decode_header_object(found["X-Chio-Execution-Nonce"]) == nonce.to_wire()


def test_the_installed_script_reads_the_capability_from_stdin(
    keys: dict[str, Path], tmp_path: Path
) -> None:
    cap = capability_file(tmp_path, ("notes", "write"))
    result = run_script(
        "proof", "--agent-key", str(keys["agent"]), "--capability", "-",
        "--method", "DELETE", "--url", "http://127.0.0.1:8000/notes/3",
        stdin=cap.read_text(),
    )  # fmt: skip
    assert result.status == 0, result.err
    assert [line.split(":")[0] for line in result.out.splitlines()] == [
        "X-Chio-Capability",
        "X-Chio-DPoP",
    ]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        ({"agent": "kernel"}, "is not the capability's subject"),
        ({"capability": "missing.json"}, "missing.json: no such file"),
        ({"capability": "garbage"}, "is neither JSON nor base64url JSON"),
        ({"capability": "notcap"}, "invalid capability token"),
        ({"method": "GE T"}, "--method 'GE T' is not an HTTP method"),
        ({"url": "/x?a=1&a=2"}, "--url: query parameter 'a' is repeated"),
        ({"data": "@nofile"}, "--data nofile: no such file"),
    ],
)
def test_bad_input(keys: dict[str, Path], tmp_path: Path, mutate: dict, message: str) -> None:
    cap = capability_file(tmp_path, ("notes", "write"))
    (tmp_path / "garbage").write_text("%%%")
    (tmp_path / "notcap").write_text('{"id": 1}')
    options = {
        "agent": str(keys["agent"]),
        "capability": str(cap),
        "method": "GET",
        "url": "/x",
        "data": "",
    }
    for name, value in mutate.items():
        options[name] = str(keys[value]) if name == "agent" else value
        if name == "capability":
            options[name] = str(tmp_path / value)
    result = run(
        "proof", "--agent-key", options["agent"], "--capability", options["capability"],
        "--method", options["method"], "--url", options["url"], "--data", options["data"],
        "--tool-server", "a", "--tool-name", "b",
    )  # fmt: skip
    assert result.status == 2
    assert result.err.startswith("chio-middleware proof: error: ")
    assert message in result.err
