"""Start-up that fails loudly: each example, each server, each bad setting (issue 9, item 4).

The bad settings: a ``guards`` import path that does not import, a route bound twice, a
binding that names no route of the app, a Redis URL that is not one, an SQLite file that
cannot be opened, ``memory://`` under two workers, and ``unbound_routes=refuse`` with a
route that declares nothing.

Every case starts a real server on a socket where a request is already waiting, with one
bad setting, and checks that the server stops by itself, that its output names the
setting, that the waiting request got no answer at all (no bare 500, no 503: nothing was
accepted), and that the exit status is non-zero. uvicorn runs in its default lifespan
mode ("auto"), which swallows an exception raised by a lazily built middleware stack.

Two servers lose the exit status of a worker that fails to start, whatever the app does:
hypercorn (``run()`` joins the failed workers twice and keeps the second, empty result:
pgjones/hypercorn#269) and uvicorn with ``--workers N`` (its parent stops once a worker
fails its start-up, but ``main()`` exits with STARTUP_FAILURE only for a single worker).
For those the exit status check is an expected failure that names the upstream cause;
everything else is checked as for the other servers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .servers import start_refused

#: app module per example; the unbound variant adds ``GET /export`` with no declaration.
EXAMPLES = {
    "starlette": ("examples.starlette_app.app:app", "tests.e2e.apps.unbound_starlette:app"),
    "fastapi": ("examples.fastapi_app.app:app", "tests.e2e.apps.unbound_fastapi:app"),
    "flask": ("examples.flask_app.app:app", "tests.e2e.apps.unbound_flask:app"),
}
SERVERS = {
    "starlette": ["uvicorn", "hypercorn", "gunicorn-uvicorn"],
    "fastapi": ["uvicorn", "hypercorn", "gunicorn-uvicorn"],
    "flask": ["gunicorn", "hypercorn"],
}
_TWICE = {"method": "GET", "path": "/notes", "tool_server": "srv-notes", "tool_name": "list_notes"}


def bad_settings(tmp_path: Path) -> dict[str, tuple[dict[str, str], str, int]]:
    """name -> (environment, text the output must contain, workers)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the database's directory should be\n")
    return {
        "guards": (
            {"CHIO_GUARDS": '["no_such_module.guards:Guard"]'},
            "guards: cannot import 'no_such_module.guards:Guard'",
            1,
        ),
        "routes-bound-twice": (
            {"CHIO_ROUTES": json.dumps([_TWICE, _TWICE])},
            "routes: route GET /notes is bound twice",
            1,
        ),
        "routes-naming-no-route": (
            {"CHIO_ROUTES": json.dumps([{**_TWICE, "path": "/notez"}])},
            "routes: these bindings name no route of the application",
            1,
        ),
        "replay_store-redis-url": (
            {"CHIO_REPLAY_STORE": "redis://127.0.0.1:no-port/0"},
            "replay_store: invalid Redis URL",
            1,
        ),
        "replay_store-sqlite-path": (
            {"CHIO_REPLAY_STORE": f"sqlite:///{blocker}/state.db"},
            "replay_store: cannot open the SQLite replay store",
            1,
        ),
        "replay_store-memory-workers": (
            {"CHIO_REPLAY_STORE": "memory://"},
            "replay_store: memory:// keeps replay and budget state per process, but 2 workers",
            2,
        ),
        "unbound_routes-refuse": (
            {"CHIO_UNBOUND_ROUTES": "refuse"},
            "unbound_routes=refuse: these routes have no binding, @tool or @public "
            "declaration: GET /export",
            1,
        ),
    }


SETTINGS = [
    "guards",
    "routes-bound-twice",
    "routes-naming-no-route",
    "replay_store-redis-url",
    "replay_store-sqlite-path",
    "replay_store-memory-workers",
    "unbound_routes-refuse",
]
CASES = [
    pytest.param(example, server, setting, id=f"{example}-{server}-{setting}")
    for example, servers in SERVERS.items()
    for server in servers
    for setting in SETTINGS
]


def upstream_loses_exit_status(server: str, workers: int) -> str | None:
    if server == "hypercorn":
        return "hypercorn exits 0 when its worker fails (pgjones/hypercorn#269)"
    if server in ("uvicorn", "python-m-uvicorn") and workers > 1:
        return "uvicorn --workers N exits 0 when a worker fails its start-up (main())"
    return None


def check_refused(
    server: str, app: str, env: dict[str, str], expected: str, workers: int, tmp_path: Path
) -> None:
    refusal = start_refused(server, tmp_path, app=app, workers=workers, extra_env=env)
    assert refusal.returncode != -999, f"the server did not stop by itself:\n{refusal.output}"
    assert expected in refusal.output, refusal.output
    assert refusal.answer == b"", f"a request was answered: {refusal.answer[:200]!r}"
    assert "Application startup complete" not in refusal.output
    if refusal.returncode == 0:
        reason = upstream_loses_exit_status(server, workers)
        if reason is not None:
            pytest.xfail(reason)
    assert refusal.returncode != 0, refusal.output


@pytest.mark.parametrize(("example", "server", "setting"), CASES)
def test_a_bad_setting_stops_the_server_before_any_request(
    example: str, server: str, setting: str, tmp_path: Path
) -> None:
    env, expected, workers = bad_settings(tmp_path)[setting]
    plain, unbound = EXAMPLES[example]
    app = unbound if setting == "unbound_routes-refuse" else plain
    check_refused(server, app, env, expected, workers, tmp_path)


@pytest.mark.parametrize("example", ["starlette", "fastapi"])
def test_python_m_uvicorn_workers_are_counted(example: str, tmp_path: Path) -> None:
    env, expected, workers = bad_settings(tmp_path)["replay_store-memory-workers"]
    check_refused("python-m-uvicorn", EXAMPLES[example][0], env, expected, workers, tmp_path)


@pytest.mark.parametrize(
    ("config_name", "argv"),
    [("gunicorn.conf.py", []), ("deploy.py", ["-c", "deploy.py"]), ("conf.py", ["--config=conf.py"])],
)
@pytest.mark.parametrize("server", ["gunicorn", "gunicorn-uvicorn"])
def test_gunicorn_config_file_workers_are_counted(
    server: str, config_name: str, argv: list[str], tmp_path: Path
) -> None:
    """The worker count set only in a config file (the default ./gunicorn.conf.py or
    -c/--config): an explicit memory:// store still refuses to start."""
    (tmp_path / config_name).write_text("import os\n\nworkers = 2\n")
    app = "examples.flask_app.app:app" if server == "gunicorn" else None
    refusal = start_refused(
        server,
        tmp_path,
        app=app,
        workers=None,  # no --workers: the config file is the only source of the count
        extra_env={"CHIO_REPLAY_STORE": "memory://"},
        argv=argv,
    )
    assert refusal.returncode != -999, refusal.output
    assert "2 workers may run" in refusal.output, refusal.output
    assert refusal.answer == b""
    assert refusal.returncode != 0


@pytest.mark.parametrize(
    ("argv", "env"),
    [(["--workers", "2"], {}), ([], {"GRANIAN_WORKERS": "2"})],
    ids=["--workers", "GRANIAN_WORKERS"],
)
def test_granian_workers_are_counted(argv: list[str], env: dict[str, str], tmp_path: Path) -> None:
    """granian binds its own socket (it takes no descriptor): a free port, and no request
    waiting on it; it must stop by itself, naming the setting, with a non-zero status."""
    import os
    import socket
    import subprocess
    import sys

    from .servers import ISSUER, KERNEL, ROOT

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    granian = str(Path(sys.executable).parent / "granian")
    command = [granian, "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port)]
    result = subprocess.run(
        [*command, *argv, "examples.starlette_app.app:app"],
        env={
            **os.environ,
            "CHIO_SIGNING_KEY": KERNEL.seed_hex(),
            "CHIO_TRUSTED_ISSUERS": json.dumps([ISSUER.public_key.hex]),
            "CHIO_RECEIPT_SINK": "memory",
            "CHIO_REPLAY_STORE": "memory://",
            "PYTHONPATH": str(ROOT),
            **env,
        },
        cwd=tmp_path,
        capture_output=True,
        timeout=90,
        check=False,
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert "replay_store: memory:// keeps replay and budget state per process, but 2 workers" in output
    assert result.returncode != 0, output
