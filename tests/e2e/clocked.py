"""The two examples built with a clock a test can move: real time plus the offset (seconds)
written in the file ``CHIO_TEST_CLOCK_FILE`` (read on every call; absent or empty: 0)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from examples.flask_app.app import create_app as create_flask_app
from examples.starlette_app.app import create_app as create_starlette_app


class FileClock:
    """``time.time()`` plus the offset in a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self) -> float:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            text = ""
        return time.time() + (float(text) if text else 0.0)


def __getattr__(name: str) -> Any:
    # Built on first access: a server imports only the app it runs (one runtime, one sink).
    clock = FileClock(Path(os.environ.get("CHIO_TEST_CLOCK_FILE", "clock-offset")))
    if name == "starlette_app":
        return create_starlette_app(clock=clock)
    if name == "flask_app":
        return create_flask_app(clock=clock)
    raise AttributeError(name)
