"""Optional pytest fixtures, enabled by a project's ``conftest.py``::

    pytest_plugins = ["chio_middleware.testing.pytest_plugin"]

- ``chio_kit``: a fresh :class:`~chio_middleware.testing.ChioTestKit` (every tool granted);
- ``chio_env``: the kit's configuration in the ``CHIO_*`` environment for the test, for
  apps that build ``ChioSettings()`` from the environment; it yields the kit.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import ChioTestKit

__all__ = ["chio_env", "chio_kit"]


@pytest.fixture
def chio_kit() -> ChioTestKit:
    """Fresh development keys and a capability for every tool."""
    return ChioTestKit()


@pytest.fixture
def chio_env(chio_kit: ChioTestKit, monkeypatch: pytest.MonkeyPatch) -> Iterator[ChioTestKit]:
    """``chio_kit``'s settings as ``CHIO_*`` variables, for the duration of the test."""
    for name, value in chio_kit.environ().items():
        monkeypatch.setenv(name, value)
    yield chio_kit
