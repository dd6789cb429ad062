from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog
from pydantic import ValidationError

from chio_middleware import ChioSettings, RouteBinding
from chio_middleware.asgi import ChioMiddleware
from chio_middleware.core.replay import MemoryReplayStore
from chio_middleware.runtime import ChioRuntime
from chio_middleware.sinks import MemorySink

from .harness import ISSUER, KERNEL


def test_environment_with_json_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHIO_SIGNING_KEY", KERNEL.seed_hex())
    monkeypatch.setenv("CHIO_TRUSTED_ISSUERS", json.dumps([ISSUER.public_key.hex]))
    monkeypatch.setenv(
        "CHIO_ROUTES",
        json.dumps([{"method": "post", "path": "/x", "tool_server": "s", "tool_name": "t"}]),
    )
    monkeypatch.setenv("CHIO_PROOF_TTL", "120")
    s = ChioSettings(receipt_sink="memory")
    assert s.trusted_issuers == [ISSUER.public_key.hex]
    assert s.routes == [RouteBinding(method="POST", path="/x", tool_server="s", tool_name="t")]
    assert s.proof_ttl == 120 and s.load_signing_key() is not None
    assert KERNEL.seed_hex() not in repr(s)
    # keyword arguments override the environment
    assert ChioSettings(proof_ttl=60, receipt_sink="memory").proof_ttl == 60


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("signing_key", "abc"),
        ("trusted_issuers", ["zz"]),
        ("trusted_issuers", ["p256:" + "ab" * 33]),
        ("replay_store", "mysql://x"),
        ("receipt_sink", "kafka"),
        ("rate_limit", "lots"),
        ("proof_ttl", 0),
        ("receipt_lock_timeout", 0),
        ("default_policy", "allow_all"),
        ("guards", ["no_colon"]),
        ("routes", [{"method": "BREW", "path": "/x", "tool_server": "s", "tool_name": "t"}]),
        ("routes", [{"method": "GET", "path": "x", "tool_server": "s", "tool_name": "t"}]),
        (
            "routes",
            [{"method": "GET", "path": "/chio/tools/a/b", "tool_server": "s", "tool_name": "t"}],
        ),
        ("routes", [{"method": "GET", "path": "/a{b}", "tool_server": "s", "tool_name": "t"}]),
        ("unknown_setting", 1),
    ],
)
def test_invalid_settings_raise_naming_the_setting(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        ChioSettings(**{field: value})
    assert field in str(info.value)


def test_signing_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "kernel.key"
    key_file.write_text(KERNEL.seed_hex() + "\n")
    s = ChioSettings(signing_key_file=key_file, receipt_sink="memory")
    assert s.load_signing_key() is not None
    assert s.load_signing_key().public_key == KERNEL.public_key  # type: ignore[union-attr]
    with pytest.raises(ValidationError, match="signing_key_file"):
        ChioSettings(signing_key_file=tmp_path / "missing.key")
    with pytest.raises(ValidationError, match="not both"):
        ChioSettings(signing_key=KERNEL.seed_hex(), signing_key_file=key_file)


def test_policy_file_adds_routes_and_guards(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        """
default_policy = "deny"

[[routes]]
method = "DELETE"
path = "/notes/{note_id}"
tool_server = "srv-notes"
tool_name = "delete_note"
require_nonce = true

[guards]
rate_limit = "10/second"
forbidden_paths = ["/secret/**"]
secret_leak = false
"""
    )
    runtime = ChioRuntime(
        ChioSettings(signing_key=KERNEL.seed_hex(), policy_file=policy, receipt_sink="memory"),
        store=MemoryReplayStore(),
    )
    config = runtime.engine.config
    assert config.default_policy == "deny"
    assert [b.tool_name for b in config.routes.bindings] == ["delete_note"]
    assert [g.name for g in config.guards] == [
        "RateLimitGuard",
        "ForbiddenPathGuard",
        "InvocationBudgetGuard",
    ]
    assert config.policy["forbidden_paths"] == ["/secret/**"]


@pytest.mark.parametrize(
    "content",
    ["not toml [", 'default_policy = "maybe"', "[[routes]]\nmethod = 'GET'", "[guards]\nrate = 1"],
)
def test_bad_policy_files_fail_at_construction(tmp_path: Path, content: str) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(content)
    with pytest.raises(ValidationError, match="policy_file"):
        ChioSettings(policy_file=policy)


def test_duplicate_route_bindings_fail_at_construction() -> None:
    route = RouteBinding(method="GET", path="/x", tool_server="s", tool_name="t")
    with pytest.raises(ValueError, match="bound twice"):
        ChioRuntime(
            ChioSettings(routes=[route, route], receipt_sink="memory"), store=MemoryReplayStore()
        )


def test_guard_import_paths(tmp_path: Path) -> None:
    runtime = ChioRuntime(
        ChioSettings(guards=["tests.middleware.test_behaviour:NoTitles"], receipt_sink="memory"),
        store=MemoryReplayStore(),
    )
    assert "NoTitlesGuard" in [g.name for g in runtime.engine.config.guards]
    with pytest.raises(ValueError, match="cannot import"):
        ChioRuntime(
            ChioSettings(guards=["nowhere.at_all:Guard"], receipt_sink="memory"),
            store=MemoryReplayStore(),
        )
    with pytest.raises(ValueError, match="is not a Guard"):
        ChioRuntime(
            ChioSettings(guards=["json:dumps"], receipt_sink="memory"), store=MemoryReplayStore()
        )


def test_missing_signing_key_warns_loudly_and_generates_one() -> None:
    with structlog.testing.capture_logs() as logs:
        mw = ChioMiddleware(
            lambda *a: None,  # type: ignore[arg-type,return-value]
            settings=ChioSettings(receipt_sink="memory"),
            store=MemoryReplayStore(),
            sink=MemorySink(),
        )
    warning = [entry for entry in logs if entry["event"] == "chio_ephemeral_signing_key"]
    assert warning and warning[0]["log_level"] == "warning"
    assert warning[0]["kernel_key"] == mw.runtime.kernel_key.hex
