"""Session set-up shared by every test package."""

from __future__ import annotations

import os

#: Variables the test suite itself reads; ChioSettings refuses unknown CHIO_* variables.
_TEST_VARIABLES = ("CHIO_VECTORS_DIR", "CHIO_TEST_REDIS_URL")


def pytest_configure() -> None:
    """Let the suite's own CHIO_* variables through ChioSettings (and its subprocesses)."""
    present = [name for name in _TEST_VARIABLES if name in os.environ]
    if present:
        listed = [item for item in os.environ.get("CHIO_IGNORE_ENV", "").split(",") if item]
        os.environ["CHIO_IGNORE_ENV"] = ",".join([*listed, *present])
