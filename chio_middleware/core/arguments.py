"""The one argument view of a request (PROTOCOL.md 5.2): what constraints and guards see.

The arguments are the JSON object made of the path parameters, the query parameters and
the members of the body, a name given in two of them being a malformed request. The body
is read the way the most lenient mainstream framework reads it, and refused where the
strict reading differs, so the application can never act on a value no constraint saw:

- Starlette's ``request.json()`` and Flask's ``get_json(force=True)`` call ``json.loads``
  on the raw bytes, whatever the Content-Type says: a UTF-8 BOM is dropped, UTF-16/32 is
  detected, duplicate keys keep the last value, ``NaN`` and ``1e400`` (infinity) are
  numbers. (A FastAPI body field decodes JSON only for a JSON Content-Type and gets the
  bytes otherwise: the resolver marks such a route's body raw, ``RouteMatch.raw_body``,
  and it is opaque here.) A body that reads as JSON that way must read the same
  under :func:`~chio_middleware.core.canonical.parse_json` (UTF-8, no BOM, no duplicates,
  finite numbers), else 400.
- The media type is compared after the frameworks' own trimming (``str.strip()``, which
  also removes U+00A0, U+0085 and U+001C-U+001F) and lowercasing. A JSON body declared as
  a form, or a form declared as JSON, is 400.
- A form body (``application/x-www-form-urlencoded``) gives its fields, decoded by the
  same rules as the query string (``&`` only, ``+`` as space, percent-decoded strict
  UTF-8, a repeated name refused); raw bytes outside printable ASCII are refused, since
  Starlette decodes them as Latin-1 and Werkzeug as UTF-8.
- Any other body (a JSON array, string or number, multipart, text, binary) carries
  arguments no constraint can see: it is marked ``opaque``, and the engine refuses it
  (403) wherever a constraint or an argument-reading guard applies.

Path parameters (and FastAPI's ``Header()``/``Cookie()`` values) are what the framework's
converters made of the text: strings, numbers and booleans, but also a ``UUID``, a
``PurePath`` or any object a custom converter returns. A UUID and a path join the
arguments as the text that names the same value (``str()``); any other type is marked
opaque like such a body (found by an outside review: a converter returning a path object
passed ``path_prefix`` and ``forbidden_paths`` unseen).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from .canonical import JsonParseError, parse_json
from .errors import BadRequest
from .inputs import CAPABILITY_QUERY
from .request import RequestView, parse_wire_query
from .routing import RouteMatch

__all__ = ["Arguments", "media_type", "request_arguments"]

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class Arguments:
    """The arguments of a call, and what kind of body they were read from.

    ``opaque_body`` names the kind of a body whose content reaches the application but
    not the arguments (``"multipart"``, ``"non-object JSON"``, ...); ``None`` when the
    body is empty or fully represented in ``values``.
    """

    values: dict[str, Any]
    opaque_body: str | None = None
    #: The first parameter whose value is of a type no check reads, as ``name (type)``.
    opaque_value: str | None = None
    #: Parameters the handler reads as another value than the text checked (FastAPI).
    rewritten: tuple[str, ...] = ()


def request_arguments(request: RequestView, route: RouteMatch | None) -> Arguments:
    """Path parameters, query parameters and body members (PROTOCOL.md 5.2).

    ``route`` is ``None`` for an unbound request (no path parameters). Raises
    :class:`BadRequest` for a body the frameworks and the strict reader read differently.
    """
    # The reserved route's segments name the tool; they are not its arguments.
    opaque_value = None
    if route is None or route.reserved or not route.params:
        arguments: dict[str, Any] = {}
    else:
        arguments, opaque_value = _parameters(route.params)
    _merge(arguments, ((k, v) for k, v in request.query.items() if k != CAPABILITY_QUERY))
    body = request.body
    rewritten = () if route is None else route.rewritten
    if not body:
        return Arguments(arguments, None, opaque_value, rewritten)
    media = media_type(request)
    value, is_json = _read_json(body)
    opaque_body: str | None = None
    if is_json:
        if media == FORM_MEDIA_TYPE:
            raise BadRequest("a JSON body is declared as a form; send it as application/json")
        if route is not None and route.raw_body is not None:  # the handler reads the bytes
            opaque_body = route.raw_body
        elif isinstance(value, dict):
            _merge(arguments, value.items())
            if route is not None and route.body_check is not None:
                rewritten = (*rewritten, *route.body_check(value, False))
        else:
            opaque_body = "non-object JSON"
    elif media == "application/json" or media.endswith("+json"):
        raise BadRequest("request body is declared as JSON but is not valid JSON")
    elif media == FORM_MEDIA_TYPE:
        fields = parse_wire_query(body)  # refused when malformed, whoever reads it
        if route is not None and route.raw_body is not None:
            opaque_body = route.raw_body
        else:
            _merge(arguments, fields.items())
            if route is not None and route.body_check is not None:
                rewritten = (*rewritten, *route.body_check(dict(fields), True))
    elif media.startswith("multipart/"):
        opaque_body = "multipart"
    else:
        # The media type is the client's text: keep it short and printable in messages.
        shown = "".join(c for c in media[:48] if c.isprintable()) or "untyped"
        opaque_body = f"{shown} body"
    return Arguments(arguments, opaque_body, opaque_value, rewritten)


class _Unreadable(Exception):
    """A value of a type that no constraint or guard reads (its type's name)."""


def _parameters(params: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The path parameters as arguments, and the first one no check can read."""
    arguments: dict[str, Any] = {}
    opaque: str | None = None
    for name, value in params.items():
        try:
            arguments[name] = _checkable(value, 0)
        except _Unreadable as exc:
            arguments[name] = value
            if opaque is None:
                opaque = f"{name[:64]!r} ({exc})"
    return arguments, opaque


def _checkable(value: Any, depth: int) -> Any:
    """``value`` as the JSON-shaped value the checks read; raises ``_Unreadable``."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, UUID | PurePath):  # the text that names the same value
        return str(value)
    if depth < 16 and isinstance(value, list | tuple):
        return [_checkable(item, depth + 1) for item in value]
    if depth < 16 and isinstance(value, dict) and all(type(k) is str for k in value):
        return {k: _checkable(v, depth + 1) for k, v in value.items()}
    if depth < 16 and isinstance(value, BaseModel):  # a FastAPI Header()/Cookie() model
        return _checkable(value.model_dump(), depth + 1)  # its fields, as the handler reads
    raise _Unreadable(type(value).__name__[:64])


def media_type(request: RequestView) -> str:
    """The body's media type, trimmed and lowercased as the frameworks compare it."""
    values = request.header_values("content-type")
    if len(values) > 1:
        raise BadRequest("Content-Type appears more than once")
    if not values:
        return ""
    return values[0].decode("latin-1").split(";", 1)[0].strip().lower()


def _read_json(body: bytes) -> tuple[Any, bool]:
    """``(value, True)`` for a body that is JSON to the frameworks; ``(None, False)`` else.

    The strict reader goes first: what it accepts, ``json.loads`` reads identically (the
    same decoder, UTF-8 detected). Only when it refuses is the lenient reading tried, and
    a body that reads as JSON only leniently is refused.
    """
    try:
        return parse_json(body), True
    except JsonParseError as strict:
        reason = str(strict)
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return None, False
    raise BadRequest(f"request body reads differently to a lenient JSON parser: {reason[:96]}")


def _merge(arguments: dict[str, Any], items: Iterable[tuple[str, Any]]) -> None:
    for name, value in items:
        if name in arguments:
            raise BadRequest(f"argument {name[:64]!r} is given twice")
        arguments[name] = value
