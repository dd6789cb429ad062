"""open_store: which URLs name which backend, and clear errors for the rest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chio_middleware.core.replay import MemoryReplayStore
from chio_middleware.stores import open_store, sqlite_path
from chio_middleware.stores._common import redact_url
from chio_middleware.stores.sqlite import SqliteReplayStore


def test_memory() -> None:
    store = open_store("memory://", capacity=64)
    assert isinstance(store, MemoryReplayStore) and store.capacity == 64


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:////var/lib/chio/state.db", "/var/lib/chio/state.db"),
        ("sqlite:///state.db", "state.db"),
        ("sqlite:///run/state.db", "run/state.db"),
    ],
)
def test_sqlite_paths_follow_sqlalchemy(url: str, path: str) -> None:
    assert sqlite_path(url) == path


def test_relative_sqlite_path_is_resolved_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///state.db")
    try:
        assert isinstance(store, SqliteReplayStore)
        assert store.path == str(tmp_path / "state.db")
    finally:
        store.close()
    assert (tmp_path / "state.db").exists()


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:///x.db?mode=ro", "sqlite://host/x"],
)
def test_sqlite_urls_without_a_file_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="sqlite"):
        open_store(url)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "memory",
        "memory://extra",
        "redis:/127.0.0.1",
        "postgres://admin:s3cret-pass@db.example/chio",
        "file:///tmp/state.db",
        "https://user:s3cret-pass@example.com/?token=s3cret-pass",
    ],
)
def test_unknown_urls_are_refused_naming_the_url_but_not_its_secrets(url: str) -> None:
    with pytest.raises(ValueError, match="replay store URL") as info:
        open_store(url)
    assert "s3cret" not in str(info.value)
    assert "memory://" in str(info.value)  # and it says what is accepted


@pytest.mark.parametrize("timeout", [0, -1, float("nan")])
def test_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        open_store("memory://", timeout=timeout)


def test_redis_needs_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "chio_middleware.stores.redis", raising=False)
    monkeypatch.setitem(sys.modules, "redis", None)  # as if redis-py were not installed
    with pytest.raises(ValueError, match=r"chio-middleware\[redis\]") as info:
        open_store("redis://:s3cret-pass@127.0.0.1:6379/0")
    assert "s3cret" not in str(info.value)


def test_importing_the_stores_does_not_import_redis() -> None:
    check = "import sys, chio_middleware.stores; print('redis' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@host:6379/1", "redis://***@host:6379/1"),
        (
            "rediss://user:pw@[::1]:6380/2?password=pw&db=3",
            "rediss://***@[::1]:6380/2?password=***&db=***",
        ),
        ("bogus", "bogus"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
