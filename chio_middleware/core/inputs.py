"""What the core reads from a request: the Chio headers and the call's arguments.

The headers carry one JSON object each (PROTOCOL.md 1.3); the arguments that grant
constraints and guards see are the path parameters, the query parameters and the members
of a JSON object body (PROTOCOL.md 5), a name given twice being a malformed request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .canonical import JsonParseError, parse_json
from .encoding import decode_header_object
from .errors import BadRequest, HeadersTooLarge
from .request import RequestView, parse_query
from .routing import RouteMatch

__all__ = [
    "CAPABILITY_HEADER",
    "CAPABILITY_QUERY",
    "DPOP_HEADER",
    "NONCE_HEADER",
    "Arguments",
    "ChioHeaders",
    "read_chio_headers",
    "request_arguments",
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

    raw_capability: bytes | None
    capability_source: str
    dpop: dict[str, Any] | None
    nonce: dict[str, Any] | None
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


@dataclass(frozen=True, slots=True)
class Arguments:
    """The arguments of a call, and whether its body could not be read as arguments."""

    values: dict[str, Any]
    #: A multipart body: the application may read fields from it that no constraint saw.
    opaque_body: bool = False


def request_arguments(request: RequestView, route: RouteMatch) -> Arguments:
    """Path parameters, query parameters and body members (PROTOCOL.md 5).

    The body counts whatever its Content-Type says, because frameworks parse it regardless
    (Starlette's ``request.json()`` ignores the header): a JSON object gives its members;
    a form body (``application/x-www-form-urlencoded``) its fields; other JSON values and
    bodies that are not JSON give none. A body declared JSON that does not parse is a
    :class:`BadRequest`; a multipart body is marked opaque for the engine to refuse when
    constraints apply.
    """
    # The reserved route's segments name the tool; they are not its arguments.
    arguments: dict[str, Any] = {} if route.reserved else dict(route.params)
    _merge(arguments, ((k, v) for k, v in request.query.items() if k != CAPABILITY_QUERY))
    if not request.body:
        return Arguments(arguments)
    media = _media_type(request)
    if media == b"application/x-www-form-urlencoded":
        _merge(arguments, parse_query(request.body).items())
        return Arguments(arguments)
    if media.startswith(b"multipart/"):
        return Arguments(arguments, opaque_body=True)
    try:
        body = parse_json(request.body)
    except JsonParseError as exc:
        if media == b"application/json" or media.endswith(b"+json"):
            raise BadRequest(f"request body is not valid JSON: {exc}") from None
        return Arguments(arguments)
    if isinstance(body, dict):
        _merge(arguments, body.items())
    return Arguments(arguments)


def _merge(arguments: dict[str, Any], items: Iterable[tuple[str, Any]]) -> None:
    for name, value in items:
        if name in arguments:
            raise BadRequest(f"argument {name[:64]!r} is given twice")
        arguments[name] = value


def _media_type(request: RequestView) -> bytes:
    values = request.header_values("content-type")
    return values[0].split(b";", 1)[0].strip().lower() if values else b""
