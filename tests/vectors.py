"""Loading the shared known-answer vectors, read in place (never copied or edited).

The vectors live in ``../shared/vectors`` beside the checkout; ``CHIO_VECTORS_DIR``
overrides that. A missing directory is an error, never a skip.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


@cache
def vectors_dir() -> Path:
    """The shared vectors directory."""
    configured = os.environ.get("CHIO_VECTORS_DIR")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "vectors"
    if not path.is_dir():
        raise RuntimeError(f"known-answer vectors not found at {path} (set CHIO_VECTORS_DIR)")
    return path


@cache
def load(name: str) -> dict[str, Any]:
    """One vector file, e.g. ``load("chio_http/dpop_v1.json")``."""
    data: dict[str, Any] = json.loads((vectors_dir() / name).read_text(encoding="utf-8"))
    return data


def cases(name: str) -> list[Any]:
    """``pytest.param`` objects for every case of a file, each with its own test id."""
    import pytest

    return [pytest.param(case, id=case["id"]) for case in load(name)["cases"]]
