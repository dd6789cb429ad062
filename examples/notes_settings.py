"""The settings the ASGI notes examples share: ``CHIO_*`` plus the examples' policy file."""

from __future__ import annotations

from pathlib import Path

from chio_middleware import ChioSettings

POLICY = Path(__file__).resolve().parent / "policy.toml"


def with_default_policy(settings: ChioSettings | None) -> ChioSettings:
    """The settings from the environment, with the example's policy file if none is set."""
    settings = settings if settings is not None else ChioSettings()
    if settings.policy_file is None:
        settings = ChioSettings(
            **{**settings.model_dump(exclude_unset=True), "policy_file": POLICY}
        )
    return settings
