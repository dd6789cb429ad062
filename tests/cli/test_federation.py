"""``chio-middleware federation``: envelopes, file-based acceptance, pins in a store."""

from __future__ import annotations

import json
from pathlib import Path

from chio_middleware.core.crypto import SigningKey
from chio_middleware.core.federation import FederationPeer, parse_envelope
from chio_middleware.stores.peers import open_peer_store

from .conftest import NOW, run

KERNEL = SigningKey.from_seed_hex("41" * 32)
OTHER = SigningKey.from_seed_hex("42" * 32)


def _key_file(tmp_path: Path, key: SigningKey, name: str) -> str:
    path = tmp_path / name
    path.write_text(key.seed_hex() + "\n")
    path.chmod(0o600)
    return str(path)


def _envelope(tmp_path: Path, key: SigningKey = KERNEL, *extra: str) -> str:
    result = run(
        "federation", "envelope", "--key", _key_file(tmp_path, key, "k.key"),
        "--kernel-id", "kernel.org-a", "--to", "mw", *extra,
    )
    assert result.status == 0, result.err
    return result.out


def test_envelope_is_signed_and_parses(tmp_path: Path) -> None:
    out = _envelope(tmp_path, KERNEL, "--nonce", "n-1")
    envelope = parse_envelope(json.loads(out))
    assert envelope.challenge.nonce == "n-1" and envelope.challenge.timestamp == NOW
    assert envelope.challenge.local_kernel_id == "kernel.org-a"
    assert envelope.challenge.remote_kernel_id == "mw"
    assert envelope.declared_public_key == KERNEL.public_key.hex
    assert len(json.loads(_envelope(tmp_path))["challenge"]["nonce"]) == 32  # random default


def test_envelope_with_an_invalid_nonce_is_refused(tmp_path: Path) -> None:
    result = run(
        "federation", "envelope", "--key", _key_file(tmp_path, KERNEL, "k.key"),
        "--kernel-id", "a", "--to", "b", "--nonce", "",
    )
    assert result.status == 2


def _store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


def _accept(tmp_path: Path, envelope: str, *extra: str) -> object:
    path = tmp_path / "envelope.json"
    path.write_text(envelope)
    return run(
        "federation", "accept", str(path), "--store", _store(tmp_path), "--kernel-id", "mw",
        "--peer", f"kernel.org-a={KERNEL.public_key.hex}", *extra,
    )


def test_accept_pins_into_the_store_once(tmp_path: Path) -> None:
    envelope = _envelope(tmp_path)
    result = _accept(tmp_path, envelope)
    assert result.status == 0, result.err  # type: ignore[attr-defined]
    pinned = FederationPeer.model_validate(json.loads(result.out))  # type: ignore[attr-defined]
    assert pinned.rotation_due == NOW + 43_200
    store = open_peer_store(_store(tmp_path))
    try:
        assert store.get_peer("kernel.org-a") == pinned
    finally:
        store.close()  # type: ignore[attr-defined]
    again = _accept(tmp_path, envelope)
    assert again.status == 1  # type: ignore[attr-defined]
    assert "chio_federation_invalid" in again.err and "already used" in again.err  # type: ignore[attr-defined]


def test_accept_refuses_another_key_and_pins_nothing(tmp_path: Path) -> None:
    result = _accept(tmp_path, _envelope(tmp_path, OTHER))
    assert result.status == 1  # type: ignore[attr-defined]
    assert "chio_federation_untrusted" in result.err  # type: ignore[attr-defined]
    peers = run("federation", "peers", "--store", _store(tmp_path))
    assert peers.status == 0 and peers.out == ""


def test_peers_shows_age_and_freshness_then_forget(tmp_path: Path) -> None:
    assert _accept(tmp_path, _envelope(tmp_path)).status == 0  # type: ignore[attr-defined]
    listed = run("federation", "peers", "--store", _store(tmp_path), now=NOW + 600)
    assert listed.status == 0
    assert listed.out.startswith("kernel.org-a  fresh  key " + KERNEL.public_key.hex)
    assert "(10m ago)" in listed.out
    stale = run("federation", "peers", "--store", _store(tmp_path), "--json", now=NOW + 43_200)
    line = json.loads(stale.out)
    assert line["fresh"] is False and line["age"] == 43_200
    forgot = run("federation", "forget", "kernel.org-a", "--store", _store(tmp_path))
    assert forgot.status == 0 and forgot.out.strip() == "forgot kernel.org-a"
    missing = run("federation", "forget", "kernel.org-a", "--store", _store(tmp_path))
    assert missing.status == 1 and "not pinned" in missing.err


def test_memory_store_is_refused(tmp_path: Path) -> None:
    result = run("federation", "peers", "--store", "memory://")
    assert result.status == 2 and "one process" in result.err


def test_bad_peer_option(tmp_path: Path) -> None:
    result = _accept(tmp_path, _envelope(tmp_path), "--peer", "no-equals-sign")
    assert result.status == 2  # type: ignore[attr-defined]


def test_handshake_to_nowhere_fails_with_the_reason(tmp_path: Path) -> None:
    result = run(
        "federation", "handshake", "http://127.0.0.1:1", "--key",
        _key_file(tmp_path, KERNEL, "k.key"), "--kernel-id", "kernel.org-a", "--to", "mw",
        "--timeout", "2",
    )
    assert result.status == 1 and "cannot reach" in result.err
