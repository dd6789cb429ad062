"""ChioSettings: the one configuration object (environment prefix ``CHIO_``).

Keyword arguments override the environment; list values are JSON or comma-separated in
the environment (``CHIO_TRUSTED_ISSUERS='["ab12..."]'`` or ``CHIO_TRUSTED_ISSUERS=ab12...``).
Everything is validated at construction, and a bad value raises
``pydantic.ValidationError`` naming the setting; a ``CHIO_*`` variable that is no setting
is an error too. No error ever shows an input value (a secret could be among them). Route
bindings and guard settings may also come from a TOML policy file (``policy_file``); see
:func:`load_policy_file`.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ._settings_env import ChioEnvSource, check_environment, check_names, hide_secrets
from .core.crypto import KeyFormatError, PublicKey, SigningKey
from .core.guards import parse_rate
from .core.replay import DEFAULT_CAPACITY, DEFAULT_SUBJECT_QUOTA
from .core.routing import RouteBinding, RouteTable

__all__ = [
    "DEFAULT_FORBIDDEN_PATHS",
    "ChioSettings",
    "PolicyFederation",
    "PolicyFile",
    "load_policy_file",
]

#: Paths that an agent's tool call should never name (globs; ``**`` spans directories).
DEFAULT_FORBIDDEN_PATHS = ("/etc/shadow", "/root/**", "**/.ssh/**", "**/.aws/**", "**/.gnupg/**")

_STORE_SCHEMES = ("memory://", "sqlite:///", "redis://", "rediss://")


def _check_rate(value: str | None) -> str | None:
    if value is not None:
        parse_rate(value)
    return value


def _check_keys(values: list[str]) -> list[str]:
    for value in values:
        try:
            PublicKey.from_hex(value)
        except KeyFormatError as exc:
            raise ValueError(str(exc)) from None
    return values


def check_kernel_id(value: str) -> str:
    """A kernel id: 1-256 printable characters, no surrounding spaces."""
    if not 1 <= len(value) <= 256 or not value.isprintable() or value != value.strip():
        raise ValueError(
            f"kernel id {value[:40]!r} must be 1-256 printable characters without "
            "surrounding spaces"
        )
    return value


def check_federation_peers(values: dict[str, str]) -> dict[str, str]:
    """Trust anchors: each kernel id valid, each key a hex Ed25519 public key."""
    for kernel, key in values.items():
        check_kernel_id(kernel)
        try:
            PublicKey.from_hex(key)
        except KeyFormatError as exc:
            raise ValueError(f"kernel {kernel!r}: {exc}") from None
    return values


class ChioSettings(BaseSettings):
    """Settings of the Chio middleware (environment prefix ``CHIO_``)."""

    model_config = SettingsConfigDict(
        env_prefix="CHIO_", frozen=True, extra="forbid", hide_input_in_errors=True
    )

    signing_key: SecretStr | None = Field(
        default=None, description="Hex Ed25519 seed of the middleware (signs receipts, nonces)."
    )
    signing_key_file: Path | None = Field(default=None, description="File holding the hex seed.")
    trusted_issuers: list[str] = Field(default_factory=list, description="Capability issuer keys.")
    trusted_kernel_keys: list[str] = Field(
        default_factory=list, description="Kernel keys whose execution nonces are accepted."
    )
    routes: list[RouteBinding] = Field(default_factory=list, description="Route bindings.")
    policy_file: Path | None = Field(default=None, description="TOML file of bindings and guards.")
    revoked_capabilities: list[str] = Field(default_factory=list, description="Revoked token ids.")
    replay_store: str = Field(default="memory://", description="memory://, sqlite:///..., redis://")
    store_key_prefix: str = Field(default="chio:", description="Key prefix in shared stores.")
    store_timeout: float = Field(default=0.25, gt=0, le=30, description="Store timeout, seconds.")
    store_capacity: int = Field(
        default=DEFAULT_CAPACITY, ge=16, description="In-memory store entries (full: 503)."
    )
    store_subject_quota: int = Field(
        default=DEFAULT_SUBJECT_QUOTA,
        ge=1,
        description="Live replay slots one capability subject may hold, every store (429 past).",
    )
    receipt_sink: str = Field(
        default="jsonl:chio-receipts.jsonl", description="jsonl:<path>, structlog or memory."
    )
    receipt_fsync: Literal["always", "interval", "never"] = "interval"
    receipt_fsync_interval: float = Field(default=1.0, gt=0, le=60)
    receipt_max_bytes: int = Field(default=50 * 2**20, ge=4096)
    receipt_backups: int = Field(default=5, ge=0)
    receipt_lock_timeout: float = Field(
        default=1.0, gt=0, le=60, description="Longest wait for the receipt log lock, seconds."
    )
    telemetry: Literal["auto", "otel", "off"] = Field(
        default="auto",
        description="OpenTelemetry metrics and spans: auto (when installed), otel, off.",
    )
    receipt_mode: Literal["final", "decision"] = Field(
        default="final",
        description="decision: record a signed decision receipt before the app runs (7.1).",
    )
    proof_ttl: int = Field(default=300, ge=1, le=86400)
    max_clock_skew: int = Field(default=30, ge=0, le=3600)
    nonce_ttl: int = Field(default=30, ge=1, le=3600)
    max_body_bytes: int = Field(default=2**20, ge=0)
    max_header_bytes: int = Field(default=16 * 1024, ge=256, le=2**20)
    max_delegation_depth: int = Field(default=4, ge=0, le=64)
    default_policy: Literal["allow_safe", "deny"] = "allow_safe"
    unbound_routes: Literal["warn", "refuse"] = Field(
        default="warn", description="A framework route with no binding: warn, or refuse to start."
    )
    public_paths: list[str] = Field(
        default_factory=list, description="Templates of routes that need no capability."
    )
    rate_limit: str | None = Field(default=None, description="Per-subject rate, e.g. 60/minute.")
    forbidden_paths: list[str] = Field(default_factory=lambda: list(DEFAULT_FORBIDDEN_PATHS))
    secret_leak_guard: bool = True
    guards: list[str] = Field(default_factory=list, description="Guard import paths mod:attr.")
    websocket: Literal["refuse", "allow_unverified"] = "refuse"
    # Federation trust (PROTOCOL.md 9; README "Federation trust").
    kernel_id: str | None = Field(
        default=None, description="This middleware's kernel id in federation handshakes."
    )
    federation_peers: dict[str, str] = Field(
        default_factory=dict, description="Federation trust anchors: kernel id -> public key."
    )
    federation_rotation_window: int = Field(default=43_200, ge=60, le=30 * 86_400)
    federation_max_skew: int = Field(default=300, ge=1, le=3_600)
    federation_pin_cache_ttl: int = Field(default=60, ge=0, le=43_200)
    capability_query_param: bool = Field(
        default=False,
        description=(
            "Accept the capability as the chio_capability query parameter (the upstream SDKs' "
            "fallback). Off by default: query strings land in access logs and proxies' logs."
        ),
    )
    ignore_env: list[str] = Field(
        default_factory=list,
        description="CHIO_* variables (names or globs) of other tools, not settings.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment is read by :class:`ChioEnvSource` (JSON or comma lists)."""
        env = ChioEnvSource(
            settings_cls,
            case_sensitive=getattr(env_settings, "case_sensitive", None),
            env_prefix=getattr(env_settings, "env_prefix", None),
        )
        return init_settings, env, dotenv_settings, file_secret_settings

    @model_validator(mode="after")
    def _known_environment(self) -> ChioSettings:
        prefix = str(self.model_config.get("env_prefix") or "")
        check_environment(
            os.environ, prefix=prefix, fields=type(self).model_fields, ignore=self.ignore_env
        )
        return self

    @field_validator("trusted_issuers", "trusted_kernel_keys")
    @classmethod
    def _valid_keys(cls, values: list[str]) -> list[str]:
        return _check_keys(values)

    @field_validator("kernel_id")
    @classmethod
    def _valid_kernel_id(cls, value: str | None) -> str | None:
        return None if value is None else check_kernel_id(value)

    @field_validator("federation_peers")
    @classmethod
    def _valid_peers(cls, values: dict[str, str]) -> dict[str, str]:
        return check_federation_peers(values)

    @field_validator("signing_key")
    @classmethod
    def _valid_seed(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                SigningKey.from_seed_hex(value.get_secret_value())
            except KeyFormatError:
                raise ValueError("must be 64 hex characters (an Ed25519 seed)") from None
        return value

    @field_validator("public_paths")
    @classmethod
    def _valid_public_paths(cls, values: list[str]) -> list[str]:
        RouteTable([], values)  # the same template rules as route bindings
        return values

    @field_validator("replay_store")
    @classmethod
    def _valid_store(cls, value: str) -> str:
        if not value.startswith(_STORE_SCHEMES):
            raise ValueError("must start with memory://, sqlite:///, redis:// or rediss://")
        return value

    @field_validator("receipt_sink")
    @classmethod
    def _valid_sink(cls, value: str) -> str:
        if value in ("structlog", "memory") or (value.startswith("jsonl:") and len(value) > 6):
            return value
        raise ValueError("must be jsonl:<path>, structlog or memory")

    @field_validator("rate_limit")
    @classmethod
    def _valid_rate(cls, value: str | None) -> str | None:
        return _check_rate(value)

    @field_validator("guards")
    @classmethod
    def _valid_guard_paths(cls, values: list[str]) -> list[str]:
        for value in values:
            module, _, attr = value.partition(":")
            if not module or not attr:
                raise ValueError(f"guard {value!r} must be an import path 'module:attribute'")
        return values

    @model_validator(mode="after")
    def _one_key_source(self) -> ChioSettings:
        if self.signing_key is not None and self.signing_key_file is not None:
            raise ValueError("set signing_key or signing_key_file, not both")
        if self.signing_key_file is not None:
            read_seed_file(self.signing_key_file)
        if self.policy_file is not None:
            policy = load_policy_file(self.policy_file)
            federation = policy.federation
            peers = {**self.federation_peers, **federation.peers}
            for kernel, key in federation.peers.items():
                other = self.federation_peers.get(kernel)
                if other is not None and PublicKey.from_hex(other) != PublicKey.from_hex(key):
                    raise ValueError(
                        f"federation_peers: kernel {kernel!r} has another key in policy_file "
                        f"{self.policy_file} [federation] peers"
                    )
            kernel_id = self.kernel_id or federation.kernel_id
        else:
            peers, kernel_id = self.federation_peers, self.kernel_id
        if peers and kernel_id is None:
            raise ValueError(
                "federation_peers is set but kernel_id is not: a handshake names this "
                "middleware by its kernel_id"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _known_names(cls, data: Any) -> Any:
        check_names(data, cls.model_fields)
        return data

    # Keep this the last model validator: pydantic nests later ones outside earlier ones, and
    # this one must be outermost so that no other validator's error carries a secret.
    @model_validator(mode="wrap")
    @classmethod
    def _secrets_hidden(cls, data: Any, handler: ModelWrapValidatorHandler[ChioSettings]) -> Any:
        return handler(hide_secrets(data, cls.model_fields))

    def load_signing_key(self) -> SigningKey | None:
        """The configured signing key, or ``None`` when none is configured."""
        if self.signing_key is not None:
            return SigningKey.from_seed_hex(self.signing_key.get_secret_value())
        if self.signing_key_file is not None:
            return read_seed_file(self.signing_key_file)
        return None


def read_seed_file(path: Path) -> SigningKey:
    """Read a hex seed file; raise ``ValueError`` naming ``signing_key_file``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"signing_key_file {path}: {exc.strerror}") from None
    try:
        return SigningKey.from_seed_hex(text.strip())
    except KeyFormatError:
        raise ValueError(f"signing_key_file {path}: not a hex Ed25519 seed") from None


class PolicyGuards(BaseModel):
    """The ``[guards]`` table of a policy file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_limit: str | None = None
    forbidden_paths: list[str] | None = None
    secret_leak: bool | None = None
    custom: list[str] | None = None

    @field_validator("rate_limit")
    @classmethod
    def _valid_rate(cls, value: str | None) -> str | None:
        return _check_rate(value)


class PolicyFederation(BaseModel):
    """The ``[federation]`` table of a policy file (the ``federation_*`` settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kernel_id: str | None = None
    peers: dict[str, str] = Field(default_factory=dict)
    rotation_window: int | None = Field(default=None, ge=60, le=30 * 86_400)
    max_skew: int | None = Field(default=None, ge=1, le=3_600)
    pin_cache_ttl: int | None = Field(default=None, ge=0, le=43_200)

    @field_validator("kernel_id")
    @classmethod
    def _valid_kernel_id(cls, value: str | None) -> str | None:
        return None if value is None else check_kernel_id(value)

    @field_validator("peers")
    @classmethod
    def _valid_peers(cls, values: dict[str, str]) -> dict[str, str]:
        return check_federation_peers(values)


class PolicyFile(BaseModel):
    """A TOML policy file: ``default_policy``, ``[[routes]]``, ``[guards]``, ``[federation]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_policy: Literal["allow_safe", "deny"] | None = None
    routes: list[RouteBinding] = Field(default_factory=list)
    guards: PolicyGuards = Field(default_factory=PolicyGuards)
    federation: PolicyFederation = Field(default_factory=PolicyFederation)


def load_policy_file(path: Path) -> PolicyFile:
    """Parse and validate a policy file; errors name ``policy_file`` and the path."""
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"policy_file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"policy_file {path}: invalid TOML: {exc}") from None
    try:
        return PolicyFile.model_validate(data)
    except ValueError as exc:
        raise ValueError(f"policy_file {path}: {exc}") from None
