"""Session set-up shared by every test package."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import structlog

#: Variables the test suite itself reads (and passes to the servers it starts).
#: ChioSettings refuses unknown CHIO_* variables, so they are listed in CHIO_IGNORE_ENV.
_TEST_VARIABLES = ("CHIO_TEST_*", "CHIO_VECTORS_DIR")


def pytest_configure() -> None:
    """Let the suite's own CHIO_* variables through ChioSettings (and its subprocesses)."""
    listed = [item for item in os.environ.get("CHIO_IGNORE_ENV", "").split(",") if item]
    os.environ["CHIO_IGNORE_ENV"] = ",".join(
        [*listed, *(name for name in _TEST_VARIABLES if name not in listed)]
    )


@pytest.fixture(autouse=True)
def _structlog_unconfigured_after() -> Iterator[None]:
    """structlog.testing.capture_logs() leaves structlog marked as configured, which makes the
    library log through structlog rather than the stdlib logger (caplog sees nothing) for
    every later test, so whether a log test passed depended on the tests run before it."""
    yield
    structlog.reset_defaults()
