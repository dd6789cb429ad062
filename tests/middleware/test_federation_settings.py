"""Federation settings (PROTOCOL.md 9): environment, validation naming the setting, and the
policy file's ``[federation]`` table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from chio_middleware import ChioSettings
from chio_middleware.core.crypto import SigningKey
from chio_middleware.core.federation import MemoryPeerStore
from chio_middleware.core.replay import MemoryReplayStore
from chio_middleware.runtime import ChioRuntime
from chio_middleware.sinks import MemorySink

from .harness import KERNEL

PEER = SigningKey.from_seed_hex("41" * 32)
OTHER = SigningKey.from_seed_hex("42" * 32)


def _settings(**values: Any) -> ChioSettings:
    return ChioSettings(receipt_sink="memory", signing_key=KERNEL.seed_hex(), **values)


def _runtime(settings: ChioSettings) -> ChioRuntime:
    return ChioRuntime(
        settings, store=MemoryReplayStore(), sink=MemorySink(), peers=MemoryPeerStore()
    )


def test_defaults() -> None:
    s = _settings()
    assert s.kernel_id is None and s.federation_peers == {}
    assert s.federation_rotation_window == 43_200
    assert s.federation_max_skew == 300
    assert s.federation_pin_cache_ttl == 60
    assert _runtime(s).engine.federation is None


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHIO_KERNEL_ID", "mw-1")
    monkeypatch.setenv("CHIO_FEDERATION_PEERS", json.dumps({"kernel.a": PEER.public_key.hex}))
    monkeypatch.setenv("CHIO_FEDERATION_ROTATION_WINDOW", "600")
    monkeypatch.setenv("CHIO_FEDERATION_MAX_SKEW", "60")
    s = _settings()
    assert s.kernel_id == "mw-1" and s.federation_peers == {"kernel.a": PEER.public_key.hex}
    federation = _runtime(s).engine.federation
    assert federation is not None
    assert federation.config.kernel_id == "mw-1"
    assert federation.config.anchors == {"kernel.a": PEER.public_key}
    assert (federation.config.rotation_window, federation.config.max_skew) == (600, 60)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"kernel_id": "", "federation_peers": {}}, "kernel_id"),
        ({"kernel_id": " padded"}, "kernel_id"),
        ({"kernel_id": "x" * 257}, "kernel_id"),
        ({"kernel_id": "m", "federation_peers": {"k": "zz"}}, "federation_peers"),
        ({"kernel_id": "m", "federation_peers": {"": PEER.public_key.hex}}, "federation_peers"),
        ({"kernel_id": "m", "federation_peers": {"k": "p256:" + "00" * 32}}, "federation_peers"),
        ({"federation_peers": {"k": PEER.public_key.hex}}, "kernel_id"),
        ({"federation_rotation_window": 10}, "federation_rotation_window"),
        ({"federation_max_skew": 0}, "federation_max_skew"),
        ({"federation_max_skew": 3601}, "federation_max_skew"),
        ({"federation_pin_cache_ttl": -1}, "federation_pin_cache_ttl"),
    ],
)
def test_bad_values_name_the_setting(values: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError) as info:
        _settings(**values)
    assert named in str(info.value)


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_policy_file_federation_table(tmp_path: Path) -> None:
    path = _policy(
        tmp_path,
        f"""
[federation]
kernel_id = "mw-file"
rotation_window = 900
pin_cache_ttl = 0

[federation.peers]
"kernel.a" = "{PEER.public_key.hex}"
""",
    )
    runtime = _runtime(_settings(policy_file=path))
    federation = runtime.engine.federation
    assert federation is not None
    assert federation.config.kernel_id == "mw-file"
    assert federation.config.anchors == {"kernel.a": PEER.public_key}
    assert federation.config.rotation_window == 900 and federation.config.pin_cache_ttl == 0
    # The federation policy is part of the policy every receipt names.
    assert _runtime(_settings()).engine.policy_hash != runtime.engine.policy_hash


def test_policy_file_and_settings_merge_anchors(tmp_path: Path) -> None:
    path = _policy(tmp_path, f'[federation.peers]\n"kernel.b" = "{OTHER.public_key.hex}"\n')
    s = _settings(
        policy_file=path, kernel_id="mw", federation_peers={"kernel.a": PEER.public_key.hex}
    )
    federation = _runtime(s).engine.federation
    assert federation is not None
    assert set(federation.config.anchors) == {"kernel.a", "kernel.b"}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[federation]\nkernel_id = "m"\n[federation.peers]\nk = "zz"\n', "federation.peers"),
        ("[federation]\nrotation_window = 1\n", "federation.rotation_window"),
        ("[federation]\nunknown = 1\n", "federation.unknown"),
        (f'[federation.peers]\nk = "{PEER.public_key.hex}"\n', "kernel_id"),
    ],
)
def test_policy_file_errors_name_the_file_and_setting(
    tmp_path: Path, text: str, named: str
) -> None:
    path = _policy(tmp_path, text)
    with pytest.raises(ValidationError) as info:
        _settings(policy_file=path)
    assert named in str(info.value)


def test_one_kernel_with_two_keys_is_refused(tmp_path: Path) -> None:
    path = _policy(tmp_path, f'[federation.peers]\n"kernel.a" = "{OTHER.public_key.hex}"\n')
    with pytest.raises(ValidationError, match=r"federation_peers: kernel 'kernel\.a'"):
        _settings(policy_file=path, kernel_id="m", federation_peers={"kernel.a": PEER.public_key.hex})
