"""How many workers may run: command lines, config files, environments, the live server.

The end-to-end cases (real servers) are in tests/e2e/test_startup.py; these pin each source
of the count and the "cannot know" answer, which makes the shared SQLite store the default.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from chio_middleware import ChioSettings
from chio_middleware.core.replay import MemoryReplayStore
from chio_middleware.runtime import ChioRuntime
from chio_middleware.stores import SqliteReplayStore
from chio_middleware.workers import (
    detected_workers,
    restarts_workers_that_fail_to_import,
    server_of,
)

UVICORN_MAIN = "/venv/lib/python3.11/site-packages/uvicorn/__main__.py"


@pytest.mark.parametrize(
    ("argv", "server"),
    [
        (["/venv/bin/gunicorn", "app:app"], "gunicorn"),
        ([UVICORN_MAIN, "app:app"], "uvicorn"),
        (["/venv/bin/hypercorn", "app:app"], "hypercorn"),
        (["/venv/bin/granian", "--interface", "asgi", "app:app"], "granian"),
        (["/venv/lib/python3.11/site-packages/granian/__main__.py", "app:app"], "granian"),
        (["python", "-m", "pytest"], None),
        (["/srv/app/__main__.py"], None),
    ],
)
def test_server_of(argv: list[str], server: str | None) -> None:
    assert server_of(argv) == server


@pytest.mark.parametrize(
    ("environ", "argv", "expected"),
    [
        ({}, [UVICORN_MAIN, "app:app", "--workers", "4"], 4),  # python -m uvicorn
        ({}, [UVICORN_MAIN, "app:app"], 1),
        ({"UVICORN_WORKERS": "3"}, [UVICORN_MAIN, "app:app"], 3),
        ({}, ["/venv/bin/granian", "--interface", "asgi", "--workers", "5", "app:app"], 5),
        ({"GRANIAN_WORKERS": "2"}, ["/venv/bin/granian", "app:app"], 2),
        ({}, ["/venv/bin/hypercorn", "-w", "3", "app:app"], 3),
    ],
)
def test_command_lines_and_environments(
    environ: dict[str, str], argv: list[str], expected: int, tmp_path: Path
) -> None:
    assert detected_workers(environ, argv, cwd=tmp_path) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bind = '0.0.0.0:80'\nworkers = 4\n", 4),
        ("workers = 1\n", 1),
        ("bind = '0.0.0.0:80'\n", 1),  # the file does not set workers: gunicorn's default 1
        ("import multiprocessing\nworkers = multiprocessing.cpu_count() * 2 + 1\n", None),
        ("import os\nworkers = int(os.environ.get('N', '4'))\n", None),
        ("workers = 2\nworkers += 2\n", None),
        ("this is not python (\n", None),
    ],
)
@pytest.mark.parametrize(
    "argv",
    [
        ["/venv/bin/gunicorn", "app:app"],  # the default ./gunicorn.conf.py
        ["/venv/bin/gunicorn", "-c", "gunicorn.conf.py", "app:app"],
        ["/venv/bin/gunicorn", "--config=file:gunicorn.conf.py", "app:app"],
    ],
)
def test_gunicorn_config_files(
    text: str, expected: int | None, argv: list[str], tmp_path: Path
) -> None:
    (tmp_path / "gunicorn.conf.py").write_text(text)
    assert detected_workers({}, argv, cwd=tmp_path) == expected


def test_gunicorn_command_line_overrides_its_config_file(tmp_path: Path) -> None:
    (tmp_path / "gunicorn.conf.py").write_text("import os\nworkers = os.cpu_count()\n")
    argv = ["/venv/bin/gunicorn", "-w", "2", "app:app"]
    assert detected_workers({}, argv, cwd=tmp_path) == 2
    cmd_args = {"GUNICORN_CMD_ARGS": "--workers 3"}
    assert detected_workers(cmd_args, ["/venv/bin/gunicorn", "app:app"], cwd=tmp_path) == 3


def test_a_named_config_file_that_cannot_be_read_is_unknown(tmp_path: Path) -> None:
    argv = ["/venv/bin/gunicorn", "-c", "missing.py", "app:app"]
    assert detected_workers({}, argv, cwd=tmp_path) is None
    argv = ["/venv/bin/gunicorn", "-c", "python:deploy.gunicorn", "app:app"]
    assert detected_workers({}, argv, cwd=tmp_path) is None


def test_hypercorn_toml_config(tmp_path: Path) -> None:
    (tmp_path / "h.toml").write_text('bind = ["0.0.0.0:80"]\nworkers = 3\n')
    assert detected_workers({}, ["/venv/bin/hypercorn", "-c", "h.toml", "a:a"], cwd=tmp_path) == 3
    (tmp_path / "h.toml").write_text('bind = ["0.0.0.0:80"]\n')
    assert detected_workers({}, ["/venv/bin/hypercorn", "-c", "h.toml", "a:a"], cwd=tmp_path) == 1
    argv = ["/venv/bin/hypercorn", "-c", "python:deploy.config", "a:a"]
    assert detected_workers({}, argv, cwd=tmp_path) is None


def test_the_live_server_configuration_wins(tmp_path: Path) -> None:
    """A server object on the call stack (gunicorn's arbiter, uvicorn's and hypercorn's
    Config) gives the real count, whatever the command line says."""
    arbiter = SimpleNamespace(cfg=SimpleNamespace(workers=6))
    config = SimpleNamespace(workers=3)
    for module, local in [
        ("gunicorn.arbiter", {"self": arbiter}),
        ("uvicorn.server", {"self": SimpleNamespace(config=config)}),
        ("hypercorn.asyncio.run", {"config": config}),
    ]:
        namespace: dict[str, object] = {"__name__": module, "detected_workers": detected_workers}
        exec(
            "def serve(self=None, config=None):\n"
            "    return detected_workers({}, ['/venv/bin/gunicorn', '-w', '1', 'app:app'])\n",
            namespace,
        )
        serve = namespace["serve"]
        expected = 6 if module.startswith("gunicorn") else 3
        assert serve(**local) == expected, module  # type: ignore[operator]


def test_uvicorn_supervisor_is_recognised() -> None:
    assert restarts_workers_that_fail_to_import() is False
    namespace: dict[str, object] = {
        "__name__": "uvicorn.supervisors.multiprocess",
        "check": restarts_workers_that_fail_to_import,
    }
    exec("def target():\n    return check()\n", namespace)
    assert namespace["target"]() is True  # type: ignore[operator]


def runtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **settings: object) -> ChioRuntime:
    monkeypatch.chdir(tmp_path)
    for name in ("WEB_CONCURRENCY", "UVICORN_WORKERS", "GRANIAN_WORKERS", "GUNICORN_CMD_ARGS"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "gunicorn.conf.py").write_text("import os\nworkers = os.cpu_count()\n")
    monkeypatch.setattr(sys, "argv", ["/venv/bin/gunicorn", "app:app"])
    return ChioRuntime(ChioSettings(receipt_sink="memory", **settings))  # type: ignore[arg-type]


def test_an_unknown_worker_count_defaults_to_the_shared_sqlite_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = runtime(monkeypatch, tmp_path).store
    assert isinstance(store, SqliteReplayStore)
    assert not isinstance(store, MemoryReplayStore)
    assert (tmp_path / "chio-state.db").exists()
    store.close()


def test_an_unknown_worker_count_refuses_an_explicit_memory_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"replay_store: memory:// .* worker count cannot be known"):
        runtime(monkeypatch, tmp_path, replay_store="memory://")
