"""The neutral request view the core decides on, and the decoding rules behind it.

Adapters translate ASGI scopes and WSGI environs into a :class:`RequestView`; the agent
client and the CLI use the same :func:`parse_query` and :func:`split_target` so that both
ends compute the request binding hash (PROTOCOL.md 6) from identical inputs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes, urlsplit

from .errors import BadRequest

__all__ = [
    "RequestView",
    "decode_path",
    "parse_content_length",
    "parse_query",
    "parse_wire_query",
    "split_target",
]

_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")


def parse_content_length(value: str | bytes) -> int:
    """A Content-Length value: ASCII digits only (not ``²``), at most 19 of them."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip(" \t")
    if not _CONTENT_LENGTH.fullmatch(text):
        raise BadRequest("Content-Length is not a valid length")
    return int(text)


def parse_query(raw: str | bytes) -> dict[str, str]:
    """Decode a query string into an object of strings (PROTOCOL.md 6).

    ``&``-separated ``key=value`` pairs, percent-decoded as UTF-8 with ``+`` as a space
    (form encoding, as Starlette and Flask read queries); a pair without ``=`` has the
    empty value; empty pairs are skipped. A repeated key or invalid UTF-8 is a
    :class:`BadRequest`.
    """
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    result: dict[str, str] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        try:
            name = _form_decode(key)
            decoded = _form_decode(value)
        except UnicodeError:  # invalid UTF-8, or a str input holding a lone surrogate
            raise BadRequest("query string is not valid UTF-8") from None
        if name in result:
            raise BadRequest(f"query parameter {name[:64]!r} is repeated")
        result[name] = decoded
    return result


def parse_wire_query(raw: str | bytes) -> dict[str, str]:
    """:func:`parse_query` of a query string or form body exactly as it came off the wire.

    Raw bytes outside printable ASCII are refused first: they must be percent-encoded,
    and the frameworks read them differently (Starlette as Latin-1, Werkzeug as UTF-8),
    so no decoding of them is the one the application acts on (PROTOCOL.md 5.2).
    """
    if not raw:
        return {}
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    if not _WIRE_QUERY.fullmatch(text):
        raise BadRequest("query string or form body must be percent-encoded printable ASCII")
    return parse_query(text)


_WIRE_QUERY = re.compile(r"[\x21-\x7e]*")


def _form_decode(text: str) -> str:
    return unquote_to_bytes(text.replace("+", " ")).decode("utf-8")


def decode_path(raw: str | bytes) -> str:
    """Percent-decode a raw request path as UTF-8; invalid UTF-8 is a :class:`BadRequest`."""
    try:
        data = raw if isinstance(raw, bytes) else raw.encode("utf-8")
        return unquote_to_bytes(data).decode("utf-8")
    except UnicodeError:  # invalid UTF-8, or a str input holding a lone surrogate
        raise BadRequest("request path is not valid UTF-8") from None


def split_target(url: str) -> tuple[str, dict[str, str]]:
    """The decoded path and query of a URL or request target (for clients and the CLI).

    A target that starts with ``/`` is split at the first ``?`` (``//a/b`` is a path, not
    a host); an absolute URL is split by :func:`urllib.parse.urlsplit`.
    """
    if url.startswith("/"):
        path, _, rest = url.partition("?")
        query = rest.partition("#")[0]
        path = path.partition("#")[0]
    else:
        parts = urlsplit(url)
        path, query = parts.path, parts.query
    return decode_path(path or "/"), parse_query(query)


@dataclass(frozen=True, slots=True)
class RequestView:
    """Everything the core needs to know about an HTTP request, and nothing else.

    ``path`` is the decoded path the application sees (mount prefix included, no query),
    which the request hashes bind (PROTOCOL.md 6); ``route_path`` the part the
    application's router matches (without the mount prefix: ``root_path`` in ASGI,
    ``SCRIPT_NAME`` in WSGI), which route bindings match; ``raw_path`` the still
    percent-encoded form of ``route_path`` when the server gives it. ``query`` holds the
    decoded query parameters; ``headers`` the raw header pairs with lower-case names, in
    order and with repeats, so duplicates can be refused.
    """

    method: str
    path: str
    query: dict[str, str]
    # Not in the repr: a traceback rendered with its locals must not show the credentials.
    headers: Sequence[tuple[str, bytes]] = field(repr=False)
    body: bytes = field(default=b"", repr=False)
    raw_path: str = ""
    route_path: str = ""
    client: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def with_body(self, body: bytes) -> RequestView:
        """This request with its body (``dataclasses.replace`` without its introspection)."""
        return RequestView(
            self.method,
            self.path,
            self.query,
            self.headers,
            body,
            self.raw_path,
            self.route_path,
            self.client,
            self.extra,
        )

    def header_values(self, name: str) -> list[bytes]:
        """All values of header ``name`` (lower-case)."""
        return [value for key, value in self.headers if key == name]
