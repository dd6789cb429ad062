"""structlog.testing.capture_logs() leaves structlog marked as configured, which makes the
library log through structlog rather than the stdlib logger for every later test: reset."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _structlog_unconfigured_after() -> Iterator[None]:
    yield
    structlog.reset_defaults()
