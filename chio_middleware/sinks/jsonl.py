"""The JSON Lines receipt sink: one canonical receipt per line, append-only."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from ..core.models import HttpReceipt
from ..core.receipts import receipt_json
from . import SignReceipt, SinkError

__all__ = ["JsonlSink"]


class JsonlSink:
    """Appends each receipt as a line of canonical JSON to ``path``."""

    def __init__(self, path: str | os.PathLike[str], **_options: Any) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 (kept open: a log)

    def record(self, sign: SignReceipt) -> HttpReceipt:
        """Sign the receipt and append its line."""
        with self._lock:
            if self._file.closed:
                raise SinkError("sink is closed")
            receipt = sign({})
            try:
                self._file.write(receipt_json(receipt) + b"\n")
            except OSError as exc:
                raise SinkError(f"cannot append to {self.path}: {exc.strerror}") from exc
        return receipt

    def flush(self) -> None:
        """fsync the file."""
        with self._lock:
            if not self._file.closed:
                os.fsync(self._file.fileno())

    def close(self) -> None:
        """Flush and close."""
        self.flush()
        with self._lock:
            self._file.close()
