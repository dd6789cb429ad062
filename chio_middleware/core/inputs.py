"""What the core reads from a request's Chio headers (PROTOCOL.md 1.3).

Each header carries one JSON object. The call's arguments are read by
:mod:`chio_middleware.core.arguments`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .encoding import decode_header_object
from .errors import BadRequest, HeadersTooLarge
from .request import RequestView

__all__ = [
    "CAPABILITY_HEADER",
    "CAPABILITY_QUERY",
    "DPOP_HEADER",
    "NONCE_HEADER",
    "ChioHeaders",
    "read_chio_headers",
]

CAPABILITY_HEADER = "x-chio-capability"
DPOP_HEADER = "x-chio-dpop"
NONCE_HEADER = "x-chio-execution-nonce"
CAPABILITY_QUERY = "chio_capability"


@dataclass(frozen=True, slots=True)
class ChioHeaders:
    """The Chio request headers: proof and nonce decoded, the capability's exact bytes.

    The capability is decoded by :meth:`decode_capability`, only when the verifier has no
    cached result for these bytes (a token repeats on every call of an agent).
    """

    # Not in the repr: a traceback rendered with its locals must not show the credentials.
    raw_capability: bytes | None = field(repr=False)
    capability_source: str
    dpop: dict[str, Any] | None = field(repr=False)
    nonce: dict[str, Any] | None = field(repr=False)
    max_bytes: int

    def decode_capability(self, raw: bytes) -> dict[str, Any]:
        """Decode the capability's bytes (PROTOCOL.md 1.3)."""
        return decode_header_object(raw, name=self.capability_source, max_bytes=self.max_bytes)


def read_chio_headers(
    request: RequestView, *, max_bytes: int, query_capability: bool = False
) -> ChioHeaders:
    """Read the Chio headers (PROTOCOL.md 1.3): each at most once, within ``max_bytes``.

    With ``query_capability`` (the ``capability_query_param`` setting) the capability may
    also come as the ``chio_capability`` query parameter, not both; without it, that
    parameter is refused (400) rather than passed to the application as an argument.
    """
    found: dict[str, bytes] = {}
    for name in (CAPABILITY_HEADER, DPOP_HEADER, NONCE_HEADER):
        values = request.header_values(name)
        if len(values) > 1:
            raise BadRequest(f"header {name} appears more than once")
        if values:
            found[name] = values[0]
    raw_capability, source = found.get(CAPABILITY_HEADER), CAPABILITY_HEADER
    in_query = request.query.get(CAPABILITY_QUERY)
    if in_query is not None:
        if not query_capability:
            raise BadRequest(
                f"the {CAPABILITY_QUERY} query parameter is not accepted: query strings land "
                f"in access logs, so send the capability in the X-Chio-Capability header "
                f"(or enable capability_query_param)"
            )
        if raw_capability is not None:
            raise BadRequest("capability given both as a header and as a query parameter")
        raw_capability, source = in_query.encode("utf-8"), CAPABILITY_QUERY
    if raw_capability is not None and len(raw_capability) > max_bytes:
        raise HeadersTooLarge(f"{source} is larger than {max_bytes} bytes")
    decoded = {
        name: decode_header_object(found[name], name=name, max_bytes=max_bytes)
        for name in (DPOP_HEADER, NONCE_HEADER)
        if name in found
    }
    return ChioHeaders(
        raw_capability, source, decoded.get(DPOP_HEADER), decoded.get(NONCE_HEADER), max_bytes
    )
