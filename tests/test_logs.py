"""The library logs through the application's logging (issue 9 item 9)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from chio_middleware.logs import get_logger


@pytest.fixture(autouse=True)
def unconfigured_structlog() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def test_unconfigured_structlog_routes_to_stdlib_logging(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    log = get_logger()
    caplog.set_level(logging.INFO, logger="chio_middleware")
    log.info("chio_decision", verdict="allow", status=200)
    [record] = caplog.records
    assert record.name == "chio_middleware" and record.levelno == logging.INFO
    assert record.getMessage() == "chio_decision verdict='allow' status=200"
    assert record.chio_event == "chio_decision"  # type: ignore[attr-defined]
    assert capsys.readouterr().out == ""  # not structlog's default printer


def test_the_applications_level_applies(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="chio_middleware")
    log = get_logger()
    log.info("chio_decision", verdict="allow")
    log.warning("chio_unbound_routes", routes="POST /x")
    assert [r.getMessage() for r in caplog.records] == ["chio_unbound_routes routes='POST /x'"]


def test_configured_structlog_receives_the_events(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events:
        get_logger().warning("chio_receipt_sink_failed", error="OSError")
    assert events == [{"event": "chio_receipt_sink_failed", "error": "OSError", "log_level": "warning"}]
    assert caplog.records == []


def test_the_library_configures_nothing() -> None:
    root_handlers = list(logging.getLogger().handlers)
    get_logger().error("chio_x")
    assert not structlog.is_configured()
    assert logging.getLogger().handlers == root_handlers
    assert logging.getLogger("chio_middleware").handlers == []
