"""Never a per-process replay store where several workers may run."""

from __future__ import annotations

from pathlib import Path

import pytest

from chio_middleware import ChioSettings
from chio_middleware.core.replay import MemoryReplayStore
from chio_middleware.runtime import ChioRuntime
from chio_middleware.stores import SqliteReplayStore
from chio_middleware.workers import detected_workers

from .harness import NOW, agent_headers, make_driver


@pytest.mark.parametrize(
    ("environ", "argv", "expected"),
    [
        ({}, ["python", "-m", "pytest"], 1),
        ({"WEB_CONCURRENCY": "4"}, ["python"], 4),
        ({"GUNICORN_CMD_ARGS": "--bind 0.0.0.0:80 --workers 3"}, ["python"], 3),
        ({}, ["/venv/bin/gunicorn", "-w", "4", "app:app"], 4),
        ({}, ["/venv/bin/gunicorn", "-w8", "app:app"], 8),
        ({}, ["/venv/bin/uvicorn", "app:app", "--workers=2"], 2),
        ({}, ["/venv/bin/uvicorn", "app:app"], 1),
        ({}, ["python", "tool.py", "--workers", "9"], 1),  # not a server: not a hint
        ({"WEB_CONCURRENCY": "x"}, ["python"], 1),
    ],
)
def test_detected_workers(environ: dict[str, str], argv: list[str], expected: int) -> None:
    assert detected_workers(environ, argv) == expected


def runtime(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workers: str, **settings: object
) -> ChioRuntime:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WEB_CONCURRENCY", workers)
    return ChioRuntime(ChioSettings(receipt_sink="memory", **settings))  # type: ignore[arg-type]


def test_default_store_is_sqlite_when_several_workers_may_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert isinstance(runtime(monkeypatch, tmp_path, "1").store, MemoryReplayStore)
    shared = runtime(monkeypatch, tmp_path, "4").store
    assert isinstance(shared, SqliteReplayStore)
    assert (tmp_path / "chio-state.db").exists()
    shared.close()


def test_explicit_memory_store_refuses_to_start_under_several_workers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="replay_store: memory:// keeps replay"):
        runtime(monkeypatch, tmp_path, "4", replay_store="memory://")
    monkeypatch.setenv("CHIO_REPLAY_STORE", "memory://")
    with pytest.raises(ValueError, match="4 workers may run"):
        runtime(monkeypatch, tmp_path, "4")


def test_wsgi_multiprocess_with_a_per_process_store_fails_closed() -> None:
    d = make_driver("wsgi")
    flask_client = d.middleware  # the ChioWSGIMiddleware
    import io
    import json

    body = json.dumps({"title": "t", "body": "b"}).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/notes",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.multiprocess": True,
        "wsgi.url_scheme": "http",
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
    }
    for key, value in agent_headers("POST", "/notes", body, issued_at=NOW).items():
        environ["HTTP_" + key.upper().replace("-", "_")] = value
    seen: list[str] = []
    payload = b"".join(flask_client(environ, lambda status, headers, exc=None: seen.append(status)))
    assert seen[0].startswith("503")
    assert json.loads(payload)["error"] == "chio_unavailable"
