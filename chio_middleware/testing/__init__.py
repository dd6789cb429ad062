"""Test helpers for apps protected by chio_middleware: keys, capabilities, signing clients.

An app's own test needs three lines (Starlette, FastAPI or Flask alike)::

    from chio_middleware.testing import ChioTestKit

    def test_write_note() -> None:
        kit = ChioTestKit(grants=["srv-notes:write_note"])   # dev keys and a capability
        client = kit.client(create_app(kit.settings()))      # memory store and sink
        assert client.post("/notes", json={"title": "t"}).status_code == 201

:class:`ChioTestKit` mints fresh development keys (issuer, agent, kernel), issues a
capability for the grants given, makes settings that trust its issuer and sign with its
kernel key, and a client whose every request carries the capability and a fresh DPoP proof
(and answers the 428 execution-nonce challenge). The tool of each request is the one the
app declares for the route (``@tool``/``@public``, the settings' bindings, the policy
file), found the way the middleware finds it. The pieces are usable alone:
:func:`mint_keys`, :func:`issue_capability`, :func:`settings_for_tests`,
:meth:`ChioTestKit.auth` (an ``httpx.Auth`` for a Starlette/FastAPI ``TestClient``),
:class:`ChioFlaskClient` and :meth:`ChioTestKit.headers` (the headers of one request).
``chio_middleware.testing.pytest_plugin`` adds the ``chio_kit`` and ``chio_env`` fixtures
for projects that enable it. Never use these keys outside tests.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..client.credentials import ChioCredentials, ToolResolver
from ..core.capability import sign_capability
from ..core.clock import Clock, system_clock, uuid7
from ..core.crypto import SigningKey
from ..core.models import CapabilityToken
from ..settings import ChioSettings
from ._flask import ChioFlaskClient
from ._httpx import ChioTestAuth, auth_class_for
from ._resolve import is_flask_app, route_resolver

__all__ = [
    "ChioFlaskClient",
    "ChioTestAuth",
    "ChioTestKit",
    "DevKeys",
    "issue_capability",
    "mint_keys",
    "parse_grant",
    "settings_for_tests",
]

#: ``"server:tool"``, ``"server:tool:op1,op2"`` (``*`` for any), or a grant object.
GrantSpec = str | Mapping[str, Any]


@dataclass(frozen=True, slots=True, repr=False)
class DevKeys:
    """Development keys: the capability issuer, the agent (subject) and the kernel."""

    issuer: SigningKey
    agent: SigningKey
    kernel: SigningKey

    def __repr__(self) -> str:
        return (
            f"DevKeys(issuer={self.issuer.public_key.hex[:12]}..., "
            f"agent={self.agent.public_key.hex[:12]}..., "
            f"kernel={self.kernel.public_key.hex[:12]}...)"
        )


def mint_keys() -> DevKeys:
    """Three fresh random Ed25519 keys."""
    return DevKeys(SigningKey.generate(), SigningKey.generate(), SigningKey.generate())


def parse_grant(spec: GrantSpec) -> dict[str, Any]:
    """A grant object from ``"server:tool[:ops]"`` (ops comma-separated, default invoke)."""
    if isinstance(spec, Mapping):
        return dict(spec)
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"grant {spec!r}: expected 'server:tool' or 'server:tool:ops'")
    operations = parts[2].split(",") if len(parts) == 3 else ["invoke"]
    return {"server_id": parts[0], "tool_name": parts[1], "operations": operations}


def issue_capability(
    keys: DevKeys,
    grants: Iterable[GrantSpec] = ("*:*",),
    *,
    ttl: int = 3600,
    capability_id: str | None = None,
    clock: Clock = system_clock,
) -> CapabilityToken:
    """A capability for ``keys.agent``, signed by ``keys.issuer``, valid from now for ``ttl``.

    ``grants`` are :func:`parse_grant` specs or grant objects (``constraints``,
    ``max_invocations``, ``dpop_required`` as in PROTOCOL.md 2).
    """
    now = int(clock())
    return sign_capability(
        keys.issuer,
        {
            "id": capability_id or uuid7(),
            "issuer": keys.issuer.public_key.hex,
            "subject": keys.agent.public_key.hex,
            "scope": {"grants": [parse_grant(grant) for grant in grants]},
            "issued_at": now,
            "expires_at": now + ttl,
        },
    )


def settings_for_tests(keys: DevKeys, **overrides: Any) -> ChioSettings:
    """Settings that sign with ``keys.kernel``, trust ``keys.issuer``, keep state in memory.

    ``replay_store="memory://"`` and ``receipt_sink="memory"``: nothing touches the disk.
    Keyword arguments override these and everything else (the environment is still read).
    """
    values: dict[str, Any] = {
        "signing_key": keys.kernel.seed_hex(),
        "trusted_issuers": [keys.issuer.public_key.hex],
        "replay_store": "memory://",
        "receipt_sink": "memory",
    }
    values.update(overrides)
    return ChioSettings(**values)


def _testclient_httpx() -> Any:
    """The httpx-like module Starlette's ``TestClient`` is built on (if it is imported)."""
    module = sys.modules.get("starlette.testclient")
    return getattr(module, "httpx", None)


class ChioTestKit:
    """Keys, one capability, settings and signing test clients for one test.

    ``grants`` default to every tool (``"*:*"``). ``clock`` dates the capability and the
    proofs: give the app's middleware the same one when it runs on a fixed clock.
    Responses' receipts are verified against the kit's kernel key (``verify_receipts``).
    """

    def __init__(
        self,
        grants: Iterable[GrantSpec] = ("*:*",),
        *,
        keys: DevKeys | None = None,
        ttl: int = 3600,
        clock: Clock = system_clock,
        verify_receipts: bool = True,
    ) -> None:
        self.keys = keys if keys is not None else mint_keys()
        self.clock = clock
        self.verify_receipts = verify_receipts
        self.capability = issue_capability(self.keys, grants, ttl=ttl, clock=clock)
        self._settings: ChioSettings | None = None

    def __repr__(self) -> str:
        return f"ChioTestKit({self.keys!r}, capability_id={self.capability.id!r})"

    def settings(self, **overrides: Any) -> ChioSettings:
        """:func:`settings_for_tests` for this kit's keys (remembered for :meth:`client`)."""
        self._settings = settings_for_tests(self.keys, **overrides)
        return self._settings

    def environ(self) -> dict[str, str]:
        """The same configuration as ``CHIO_*`` environment variables (strings)."""
        return {
            "CHIO_SIGNING_KEY": self.keys.kernel.seed_hex(),
            "CHIO_TRUSTED_ISSUERS": self.keys.issuer.public_key.hex,
            "CHIO_REPLAY_STORE": "memory://",
            "CHIO_RECEIPT_SINK": "memory",
        }

    def config(self) -> dict[str, Any]:
        """The same configuration as Flask ``app.config`` keys (``CHIO_*``, typed values)."""
        return {
            "CHIO_SIGNING_KEY": self.keys.kernel.seed_hex(),
            "CHIO_TRUSTED_ISSUERS": [self.keys.issuer.public_key.hex],
            "CHIO_REPLAY_STORE": "memory://",
            "CHIO_RECEIPT_SINK": "memory",
        }

    def credentials(
        self,
        app: Any | None = None,
        *,
        settings: ChioSettings | None = None,
        tool: tuple[str, str] | None = None,
        resolver: ToolResolver | None = None,
        capability: CapabilityToken | None = None,
    ) -> ChioCredentials:
        """The signer: a fixed ``tool``, a ``resolver``, or the tools ``app`` declares.

        Without ``tool`` or ``resolver`` the tool of each request is looked up in ``app``'s
        routes and in ``settings`` (by default the last :meth:`settings` made).
        """
        if tool is None and resolver is None:
            resolver = route_resolver(app, settings if settings is not None else self._settings)
        return ChioCredentials(
            capability=capability if capability is not None else self.capability,
            agent_key=self.keys.agent,
            tool_server=None if tool is None else tool[0],
            tool_name=None if tool is None else tool[1],
            resolver=resolver,
            kernel_key=self.keys.kernel.public_key if self.verify_receipts else None,
            clock=self.clock,
        )

    def auth(self, app: Any | None = None, **options: Any) -> ChioTestAuth:
        """An ``httpx.Auth`` for a Starlette/FastAPI ``TestClient`` (``client.auth = ...``).

        ``options`` are those of :meth:`credentials`.
        """
        return auth_class_for(_testclient_httpx())(self.credentials(app, **options))

    def client(self, app: Any, **options: Any) -> Any:
        """A signing test client for ``app``: Starlette's ``TestClient`` or a Flask one.

        ``options`` go to :meth:`credentials` (``settings``, ``tool``, ``resolver``,
        ``capability``); any other keyword goes to ``TestClient`` (``base_url``,
        ``raise_server_exceptions``...).
        """
        signer_options = {
            key: options.pop(key)
            for key in ("settings", "tool", "resolver", "capability")
            if key in options
        }
        if is_flask_app(app):
            if options:
                raise TypeError(f"unexpected options for a Flask client: {sorted(options)}")
            return ChioFlaskClient(app.test_client(), self.credentials(app, **signer_options))
        from starlette.testclient import TestClient

        client = TestClient(app, **options)
        client.auth = self.auth(app, **signer_options)
        return client

    def headers(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        *,
        app: Any | None = None,
        execution_nonce: str | None = None,
        **options: Any,
    ) -> dict[str, str]:
        """The Chio headers of one request (``target``: path and query as sent)."""
        signer = self.credentials(app, **options)
        return signer.sign(method, target, body, execution_nonce=execution_nonce)

