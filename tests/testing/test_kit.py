"""``chio_middleware.testing`` against a Starlette, a FastAPI and a Flask app (README apps)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from chio_middleware import ChioSettings, RouteBinding
from chio_middleware.asgi import ChioMiddleware
from chio_middleware.client import ReceiptVerificationError, verified_receipt
from chio_middleware.core.capability import verify_capability_signature
from chio_middleware.core.clock import FixedClock
from chio_middleware.core.models import HttpReceipt
from chio_middleware.testing import (
    ChioFlaskClient,
    ChioTestKit,
    DevKeys,
    issue_capability,
    mint_keys,
    parse_grant,
    settings_for_tests,
)

from .apps import SEEN, create_fastapi_app, create_flask_app, create_starlette_app

APPS: dict[str, Callable[[ChioSettings | None], Any]] = {
    "starlette": create_starlette_app,
    "fastapi": create_fastapi_app,
    "flask": create_flask_app,
}
GRANTS = ["srv-notes:write_note", "srv-notes:delete_note"]


@pytest.fixture(autouse=True)
def _fresh_seen() -> Iterator[None]:
    SEEN.clear()
    yield
    SEEN.clear()


def receipt_of(response: Any) -> HttpReceipt | None:
    found = verified_receipt(response)
    return found if found is not None else getattr(response, "chio_receipt", None)


@pytest.mark.parametrize("framework", list(APPS))
def test_the_readme_three_lines(framework: str) -> None:
    create_app = APPS[framework]
    # -- as in the README --
    kit = ChioTestKit(grants=["srv-notes:write_note"])
    client = kit.client(create_app(kit.settings()))
    response = client.post("/notes", json={"title": "t"})
    # --
    assert response.status_code == 201, response.text if framework != "flask" else response.data
    assert SEEN == [("write_note", {"title": "t"})]
    receipt = receipt_of(response)
    assert receipt is not None  # verified against the kit's kernel key by the client
    assert (receipt.route_pattern, receipt.response_status) == ("/notes", 201)
    assert receipt.capability_id == kit.capability.id


@pytest.mark.parametrize("framework", list(APPS))
def test_a_fresh_proof_per_request_so_repeats_are_not_replays(framework: str) -> None:
    kit = ChioTestKit(grants=GRANTS)
    client = kit.client(APPS[framework](kit.settings()))
    statuses = [client.post("/notes", json={"title": "same"}).status_code for _ in range(3)]
    assert statuses == [201, 201, 201]
    assert len(SEEN) == 3


@pytest.mark.parametrize("framework", list(APPS))
def test_the_nonce_challenge_is_answered_once_and_the_handler_runs_once(framework: str) -> None:
    kit = ChioTestKit(grants=GRANTS)
    client = kit.client(APPS[framework](kit.settings()))
    response = client.delete("/notes/7")
    assert response.status_code == 204
    assert SEEN == [("delete_note", 7)]
    receipt = receipt_of(response)
    assert receipt is not None and receipt.response_status == 204


@pytest.mark.parametrize("framework", list(APPS))
def test_a_call_outside_the_grants_is_refused_by_the_app(framework: str) -> None:
    kit = ChioTestKit(grants=["srv-notes:write_note"])
    client = kit.client(APPS[framework](kit.settings()))
    response = client.delete("/notes/7")
    assert response.status_code == 403
    assert SEEN == []
    receipt = receipt_of(response)
    assert receipt is not None and receipt.response_status == 403


@pytest.mark.parametrize("framework", list(APPS))
def test_public_routes_are_sent_without_a_capability(framework: str) -> None:
    kit = ChioTestKit(grants=["srv-notes:write_note"])
    client = kit.client(APPS[framework](kit.settings()))
    response = client.get("/health")
    assert response.status_code == 200
    assert SEEN == [("health", None)]


@pytest.mark.parametrize("framework", list(APPS))
def test_receipts_from_another_kernel_fail_verification(framework: str) -> None:
    kit = ChioTestKit(grants=GRANTS)
    other = ChioTestKit(keys=DevKeys(kit.keys.issuer, kit.keys.agent, mint_keys().kernel))
    client = kit.client(APPS[framework](other.settings()))  # the app signs with another key
    with pytest.raises(ReceiptVerificationError):
        client.post("/notes", json={"title": "t"})
    unverified = ChioTestKit(keys=kit.keys, verify_receipts=False, grants=GRANTS)
    client = unverified.client(APPS[framework](other.settings()))
    assert client.post("/notes", json={"title": "t"}).status_code == 201


def test_an_untrusted_issuer_is_refused() -> None:
    kit = ChioTestKit(grants=GRANTS, verify_receipts=False)
    app = create_starlette_app(settings_for_tests(mint_keys()))  # trusts another issuer
    assert kit.client(app).post("/notes", json={"title": "t"}).status_code == 401
    assert SEEN == []


def test_unbound_side_effects_are_signed_for_the_synthetic_tool() -> None:
    kit = ChioTestKit()  # every tool, the synthetic one included
    assert kit.client(create_starlette_app(kit.settings())).post("/unbound").status_code == 200
    narrow = ChioTestKit(grants=GRANTS)
    response = narrow.client(create_starlette_app(narrow.settings())).post("/unbound")
    assert response.status_code == 403
    assert SEEN == [("unbound", None)]


def test_settings_bindings_and_reserved_tool_paths_of_a_plain_app() -> None:
    async def echo(request: Request) -> Response:
        SEEN.append((request.url.path, request.headers.get("x-chio-capability") is not None))
        return JSONResponse({"ok": True})

    inner = Starlette(
        routes=[Route("/files/{name}", echo, methods=["PUT"]), Route("/chio/tools/{s}/{t}", echo, methods=["POST"])]
    )
    kit = ChioTestKit(grants=["srv-files:put_file", "srv-x:run"])
    settings = kit.settings(
        routes=[RouteBinding(method="PUT", path="/files/{name}", tool_server="srv-files", tool_name="put_file")]
    )
    client = kit.client(ChioMiddleware(inner, settings=settings))  # no router on the outside
    assert client.put("/files/a.txt", json={"size": 1}).status_code == 200
    assert client.post("/chio/tools/srv-x/run", json={}).status_code == 200
    assert client.post("/chio/tools/srv-x/other", json={}).status_code == 403
    assert SEEN == [("/files/a.txt", True), ("/chio/tools/srv-x/run", True)]


def test_auth_on_an_existing_test_client_with_a_fixed_tool_and_clock() -> None:
    now = 1_760_000_000
    kit = ChioTestKit(grants=GRANTS, clock=FixedClock(now))
    app = create_starlette_app(kit.settings())
    app.user_middleware[0].kwargs["clock"] = FixedClock(now)  # the app runs on the same clock
    client = TestClient(app)
    client.auth = kit.auth(app)
    assert client.post("/notes", json={"title": "t"}).status_code == 201
    assert kit.capability.issued_at == now
    # a fixed tool overrides the app's declarations: the proof names the wrong tool here
    response = client.post("/notes", json={"title": "t"}, auth=kit.auth(tool=("srv-notes", "delete_note")))
    assert response.status_code == 401


def test_headers_for_one_request() -> None:
    kit = ChioTestKit(grants=GRANTS)
    app = create_starlette_app(kit.settings())
    body = b'{"title": "by hand"}'
    headers = kit.headers("POST", "/notes", body, app=app)
    assert set(headers) == {"X-Chio-Capability", "X-Chio-DPoP"}
    response = TestClient(app).post(
        "/notes", content=body, headers={**headers, "content-type": "application/json"}
    )
    assert response.status_code == 201
    assert kit.headers("GET", "/health", app=app) == {}  # public: nothing to send


def test_the_flask_client_passes_through_what_flask_offers() -> None:
    kit = ChioTestKit(grants=GRANTS)
    client = kit.client(create_flask_app(kit.settings()))
    assert isinstance(client, ChioFlaskClient)
    with client:
        response = client.post("/notes", data='{"title": "raw"}', content_type="application/json")
        assert response.status_code == 201
    assert client.post("/notes", json={"title": "q"}, query_string={"x": "1"}).status_code == 201
    assert client.open("/notes/3", method="DELETE").status_code == 204
    assert [item[0] for item in SEEN] == ["write_note", "write_note", "delete_note"]
    assert client.application is client.client.application  # anything else: the wrapped one
    with pytest.raises(TypeError, match="base_url"):
        kit.client(create_flask_app(kit.settings()), base_url="http://x")


def test_keys_capabilities_and_settings_alone() -> None:
    keys = mint_keys()
    assert len({keys.issuer.public_key, keys.agent.public_key, keys.kernel.public_key}) == 3
    assert keys.issuer.seed_hex() not in repr(keys)
    token = issue_capability(
        keys,
        ["srv:read", "srv:write:invoke,read_result", {"server_id": "s", "tool_name": "t", "operations": ["invoke"], "max_invocations": 2}],
        ttl=60,
        clock=FixedClock(1000),
    )
    verify_capability_signature(token)
    assert (token.issuer, token.subject) == (keys.issuer.public_key.hex, keys.agent.public_key.hex)
    assert (token.issued_at, token.expires_at) == (1000, 1060)
    grants = token.to_wire()["scope"]["grants"]
    assert [g["operations"] for g in grants] == [["invoke"], ["invoke", "read_result"], ["invoke"]]
    assert grants[2]["max_invocations"] == 2
    with pytest.raises(ValueError, match="server:tool"):
        parse_grant("no-colon")
    settings = settings_for_tests(keys, rate_limit="5/second")
    assert settings.trusted_issuers == [keys.issuer.public_key.hex]
    assert (settings.replay_store, settings.receipt_sink, settings.rate_limit) == ("memory://", "memory", "5/second")
    assert settings.load_signing_key().public_key == keys.kernel.public_key  # type: ignore[union-attr]


def test_environ_configures_an_app_that_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    kit = ChioTestKit(grants=GRANTS)
    for name, value in kit.environ().items():
        monkeypatch.setenv(name, value)
    client = kit.client(create_fastapi_app(None))  # ChioSettings() from the environment
    assert client.post("/notes", json={"title": "t"}).status_code == 201


def test_config_configures_the_flask_extension_from_app_config() -> None:
    import flask

    from chio_middleware.integrations import tool
    from chio_middleware.integrations.flask import Chio

    app = flask.Flask(__name__)

    @app.post("/notes")
    @tool("srv-notes", "write_note")
    def write_note() -> tuple[dict[str, str], int]:
        return {"id": "1"}, 201

    kit = ChioTestKit(grants=GRANTS)
    app.config.update(kit.config())
    Chio(app)  # settings from app.config's CHIO_* keys
    response = kit.client(app).post("/notes", json={"title": "t"})
    assert response.status_code == 201 and response.chio_receipt is not None


PLUGIN_TEST = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from chio_middleware import ChioSettings
from chio_middleware.asgi import ChioMiddleware
from chio_middleware.integrations import tool


@tool("srv", "ping")
async def ping(request):
    return JSONResponse({"pong": True})


def make_app(settings=None):
    app = Starlette(routes=[Route("/ping", ping, methods=["POST"])])
    app.add_middleware(ChioMiddleware, settings=settings)
    return app


def test_kit(chio_kit):
    assert chio_kit.client(make_app(chio_kit.settings())).post("/ping").status_code == 200


def test_env(chio_env):
    assert chio_env.client(make_app(ChioSettings())).post("/ping").status_code == 200
"""


def test_the_pytest_plugin_is_optional_and_provides_the_fixtures(tmp_path: Path) -> None:
    (tmp_path / "test_app.py").write_text(textwrap.dedent(PLUGIN_TEST))
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["chio_middleware.testing.pytest_plugin"]\n')
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    # without the plugin, the fixtures do not exist
    (tmp_path / "conftest.py").unlink()
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False)
    assert done.returncode != 0 and "fixture 'chio_kit' not found" in done.stdout


def test_the_auth_fits_the_http_library_the_test_client_is_built_on() -> None:
    import types

    import httpx

    from chio_middleware.testing._httpx import ChioTestAuth, auth_class_for

    assert auth_class_for(httpx) is ChioTestAuth and auth_class_for(None) is ChioTestAuth
    other = types.ModuleType("httpx2")

    class Auth:  # another library's base class, as httpx2's
        pass

    other.Auth = Auth  # type: ignore[attr-defined]
    made = auth_class_for(other)
    assert issubclass(made, ChioTestAuth) and issubclass(made, Auth)
    assert auth_class_for(other) is made
    kit = ChioTestKit()
    assert isinstance(made(kit.credentials(tool=("s", "t"))), Auth)
