"""``issue``: development capability tokens the middleware's verifier accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chio_middleware.core.capability import CapabilityVerifier, parse_capability
from chio_middleware.core.errors import CapabilityInvalid
from tests.cli.conftest import NOW, run, run_script
from tests.sinks.logmaker import AGENT, KERNEL


def issue(keys: dict[str, Path], *extra: str) -> dict:
    result = run(
        "issue", "--issuer-key", str(keys["kernel"]), "--subject", AGENT.public_key.hex, *extra
    )
    assert result.status == 0, result.err
    return json.loads(result.out)


def test_a_token_the_verifier_accepts(keys: dict[str, Path]) -> None:
    token = issue(keys, "--grant", "notes:read", "--id", "cap-1")
    verifier = CapabilityVerifier(trusted_issuers=[KERNEL.public_key])
    parsed = verifier.verify(token, now=int(NOW))
    assert parsed.id == "cap-1"
    assert (parsed.issued_at, parsed.expires_at) == (NOW, NOW + 3600)
    assert token["schema"] == "chio.capability.v1"
    assert token["scope"] == {
        "grants": [{"server_id": "notes", "tool_name": "read", "operations": ["invoke"]}]
    }
    with pytest.raises(CapabilityInvalid, match="expired"):
        verifier.verify(token, now=int(NOW) + 3600)


def test_grant_modifiers_bind_to_the_preceding_grant_or_to_all(keys: dict[str, Path]) -> None:
    token = issue(
        keys,
        "--constraint",
        "max_length=64",
        "--grant",
        "notes:read",
        "--constraint",
        "path_prefix=/workspace/",
        "--dpop-required",
        "--grant",
        "notes:write:invoke,read_result",
        "--max-invocations",
        "10",
        "--grant",
        "*:*",
        "--constraint",
        'regex_match="123"',
        "--ttl",
        "60",
    )
    assert token["expires_at"] - token["issued_at"] == 60
    assert token["scope"]["grants"] == [
        {
            "server_id": "notes",
            "tool_name": "read",
            "operations": ["invoke"],
            "constraints": [
                {"type": "path_prefix", "value": "/workspace/"},
                {"type": "max_length", "value": 64},
            ],
            "dpop_required": True,
        },
        {
            "server_id": "notes",
            "tool_name": "write",
            "operations": ["invoke", "read_result"],
            "constraints": [{"type": "max_length", "value": 64}],
            "max_invocations": 10,
        },
        {
            "server_id": "*",
            "tool_name": "*",
            "operations": ["invoke"],
            "constraints": [
                {"type": "regex_match", "value": "123"},
                {"type": "max_length", "value": 64},
            ],
        },
    ]
    parse_capability(token)


def test_the_installed_script_writes_the_token_to_a_file(
    keys: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "cap.json"
    result = run_script(
        "issue",
        "--issuer-key",
        str(keys["kernel"]),
        "--subject",
        "0x" + AGENT.public_key.hex.upper(),
        "--grant",
        "notes:read",
        "--out",
        str(out),
    )
    assert (result.status, result.out, result.err) == (0, "", "")
    token = json.loads(out.read_text())
    assert token["subject"] == AGENT.public_key.hex  # normalised
    CapabilityVerifier(trusted_issuers=[KERNEL.public_key]).verify(token, now=token["issued_at"])


def test_an_unimplemented_constraint_type_is_issued_with_a_warning(keys: dict[str, Path]) -> None:
    result = run(
        "issue",
        "--issuer-key",
        str(keys["kernel"]),
        "--subject",
        AGENT.public_key.hex,
        "--grant",
        "a:b",
        "--constraint",
        "time_window=9-17",
    )
    assert result.status == 0
    assert "constraint type 'time_window' is not implemented" in result.err


def test_issue_warns_about_a_pattern_re2_cannot_compile(keys: dict[str, Path]) -> None:
    base = ["issue", "--issuer-key", str(keys["kernel"]), "--subject", AGENT.public_key.hex]
    result = run(*base, "--grant", "a:b", "--constraint", "regex_match=(a)\\1")
    assert result.status == 0
    assert "regex_match pattern does not compile under RE2" in result.err
    result = run(*base, "--grant", "a:b", "--constraint", "regex_match=^[a-z]+$")
    assert result.status == 0 and "warning" not in result.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--grant", "notes"], "--grant 'notes': expected SERVER:TOOL or SERVER:TOOL:OPS"),
        (["--grant", "a:b:c:d"], "expected SERVER:TOOL or SERVER:TOOL:OPS"),
        (["--grant", "a::invoke"], "expected SERVER:TOOL or SERVER:TOOL:OPS"),
        (["--grant", "a:b:Invoke"], "operation 'Invoke' is not a snake_case name"),
        ([], "give at least one --grant"),
        (["--grant", "a:b", "--constraint", "path_prefix"], "expected TYPE=VALUE"),
        (["--grant", "a:b", "--max-invocations", str(2**32)], "cannot build the token"),
    ],
)
def test_bad_grants(keys: dict[str, Path], argv: list[str], message: str) -> None:
    result = run(
        "issue", "--issuer-key", str(keys["kernel"]), "--subject", AGENT.public_key.hex, *argv
    )
    assert result.status == 2
    assert message in result.err


def test_bad_subject_missing_key_file_and_bad_key_file(
    keys: dict[str, Path], tmp_path: Path
) -> None:
    base = ["issue", "--grant", "a:b"]
    result = run(*base, "--issuer-key", str(keys["kernel"]), "--subject", "zz" * 32)
    assert (result.status, result.err) == (
        2,
        "chio-middleware issue: error: --subject: public key is not valid hex\n",
    )
    result = run(*base, "--issuer-key", str(tmp_path / "missing.key"), "--subject", "ab" * 32)
    assert result.status == 2
    assert f"--issuer-key {tmp_path / 'missing.key'}: no such file" in result.err
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key")
    result = run_script(*base, "--issuer-key", str(garbage), "--subject", "ab" * 32)
    assert result.status == 2
    assert f"--issuer-key {garbage}: not a key file" in result.err
    assert "Traceback" not in result.err


def test_usage_errors_from_argparse(keys: dict[str, Path]) -> None:
    result = run("issue", "--issuer-key", str(keys["kernel"]))
    assert result.status == 2
    assert "the following arguments are required: --subject" in result.err
    result = run("issue", "--issuer-key", "k", "--subject", "s", "--ttl", "0", "--grant", "a:b")
    assert result.status == 2
    assert "--ttl: must be positive" in result.err


def test_a_keygen_json_file_is_a_key_file_too(tmp_path: Path) -> None:
    key_file = tmp_path / "kernel.json"
    key_file.write_text(run("keygen", "--json").out)
    result = run("issue", "--issuer-key", str(key_file), "--subject", "ab" * 32, "--grant", "a:b")
    assert result.status == 0
    assert json.loads(result.out)["issuer"] == json.loads(key_file.read_text())["public_key"]
