"""Optional C accelerators of the request path, installed by the runtime (issue 13).

The core imports only the standard library, pydantic and PyNaCl; this module, outside
it, hands the core's canonical JSON a faster encoder when one is importable: orjson with
sorted keys, whose output is byte-identical to RFC 8785 on the domain the core gives it
(objects of ASCII keys, strings, integers up to 64 bits, booleans, null: see
``canonical._is_fast`` and the Hypothesis property in ``tests/test_speedups.py``).
Without orjson the stdlib encoder does the same job, a little slower.
"""

from __future__ import annotations

from typing import Any

from .core.canonical import use_fast_encoder

__all__ = ["install"]


def install() -> bool:
    """Install the accelerators that are importable; True when orjson is in use."""
    try:
        import orjson
    except ImportError:
        return False
    dumps, option = orjson.dumps, orjson.OPT_SORT_KEYS

    def encode(value: Any) -> bytes:
        return dumps(value, option=option)

    use_fast_encoder(encode)
    return True
