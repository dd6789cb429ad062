"""Route bindings, route matching and canonical request paths (PROTOCOL.md 5, 5.1).

A :class:`RouteBinding` maps ``(method, path template)`` to ``(tool_server, tool_name)``
and the route's requirements. A template parameter is a whole segment, written as
Starlette writes it (``{name}``, ``{name:int}``, ``{name:path}``) or as Flask does
(``<name>``, ``<int:name>``, ``<path:name>``); the converters are ``str`` (one segment,
the default), ``path`` (the rest of the path, slashes included), ``int``, ``float`` and
``uuid``. Each matches at least what Starlette's and Werkzeug's converter of that name
match (``int`` takes any Unicode digit, as Werkzeug's ``\\d+`` does), so a request that
either framework dispatches to the route is checked against its binding. A binding also
matches its path with the trailing slash toggled when no binding matches exactly (Flask's
``strict_slashes=False``, Werkzeug's and Starlette's slash redirects).

The reserved template ``/chio/tools/{server}/{tool}`` is always bound, to the tool its
percent-decoded segments name. The route pattern, path parameters and tool of a request
come from the binding, never from anything else the client sends.

Before any matching, :func:`check_canonical_path` refuses (400) every path that
frameworks may normalise differently (PROTOCOL.md 5.1), so that the route checked is the
route dispatched for plain ASGI/WSGI apps and, as a second line, for the frameworks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote_to_bytes

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import BadRequest

__all__ = [
    "RESERVED_TOOL_TEMPLATE",
    "RouteBinding",
    "RouteMatch",
    "RouteTable",
    "check_canonical_path",
    "template_shape",
]

RESERVED_TOOL_TEMPLATE = "/chio/tools/{server}/{tool}"
_RESERVED_PREFIX = "/chio/tools/"
# {name} / {name:conv} (Starlette) and <name> / <conv:name> (Flask, Werkzeug).
_STARLETTE_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?\}")
_FLASK_PARAM = re.compile(r"<(?:([a-z]+):)?([A-Za-z_][A-Za-z0-9_]*)>")
_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})

#: Converter name -> (regex, value conversion). Each regex matches a superset of what the
#: Starlette and Werkzeug converters of that name match.
_CONVERTERS: dict[str, tuple[str, Any]] = {
    "str": (r"[^/]+", str),
    "string": (r"[^/]+", str),
    "path": (r".*", str),
    "int": (r"\d+", int),
    "float": (r"\d+(?:\.\d+)?", float),
    "uuid": (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", str),
}


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    converter: str


def _parse_segment(segment: str, template: str) -> _Param | None:
    """The parameter a template segment declares, ``None`` for a literal segment."""
    starlette = _STARLETTE_PARAM.fullmatch(segment)
    if starlette:
        name, converter = starlette.group(1), starlette.group(2) or "str"
    else:
        flask = _FLASK_PARAM.fullmatch(segment)
        if not flask:
            if any(c in segment for c in "{}<>"):
                raise ValueError(f"a parameter must be a whole segment in {template!r}")
            return None
        name, converter = flask.group(2), flask.group(1) or "str"
    if converter not in _CONVERTERS:
        known = ", ".join(sorted(_CONVERTERS))
        raise ValueError(f"unknown converter {converter!r} in {template!r} (known: {known})")
    return _Param(name, converter)


def _template_params(template: str) -> list[_Param | None]:
    return [_parse_segment(segment, template) for segment in template.split("/")]


class RouteBinding(BaseModel):
    """Which tool of which tool server a route is, and what it requires."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str
    path: str
    tool_server: str = Field(min_length=1)
    tool_name: str = Field(min_length=1)
    require_dpop: bool = True
    require_nonce: bool = False

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        method = value.upper()
        if method not in _METHODS:
            raise ValueError(f"unsupported HTTP method {value!r}")
        return method

    @field_validator("path")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"route template {value!r} must start with '/'")
        if value.startswith(_RESERVED_PREFIX):
            raise ValueError(f"{_RESERVED_PREFIX}... is reserved and always bound")
        if "//" in value:
            raise ValueError(f"route template {value!r} has an empty segment")
        names = [p.name for p in _template_params(value) if p is not None]
        if len(names) != len(set(names)):
            raise ValueError(f"route template {value!r} repeats a parameter name")
        return value

    def policy_view(self) -> dict[str, Any]:
        """This binding as it enters the policy hash."""
        return self.model_dump()


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """A request's route: its pattern, tool, path parameters and the binding (if any).

    ``binding`` is ``None`` for the reserved ``/chio/tools/{server}/{tool}`` route and for
    the synthetic route of an unbound request (``unbound``, PROTOCOL.md 5.3), which guards
    see with the reference's synthetic tool and the request path as its pattern.
    """

    pattern: str
    tool_server: str
    tool_name: str
    params: dict[str, Any]
    binding: RouteBinding | None
    unbound: bool = False
    #: A route declared public (``public_paths``, ``@chio.public``): no capability needed.
    public: bool = False
    #: Why the framework hands this route's body to the handler as bytes, not as the
    #: members a JSON object would give (``None``: it reads it as the argument view does).
    raw_body: str | None = None
    #: Parameters the framework hands over as another value than their text (FastAPI's
    #: typed ones): refused wherever a constraint or an argument-reading guard applies.
    rewritten: tuple[str, ...] = ()
    #: The body members the handler reads as another value than the JSON (or form text)
    #: checked: a framework's check, called with the members read (FastAPI's models).
    body_check: Callable[[Any, bool], list[str]] | None = None

    @property
    def reserved(self) -> bool:
        """True for the reserved ``/chio/tools/{server}/{tool}`` route."""
        return self.binding is None and not self.unbound and not self.public


@dataclass(frozen=True, slots=True)
class _Compiled:
    regex: re.Pattern[str]
    converters: dict[str, Any]
    binding: RouteBinding

    def match(self, path: str) -> RouteMatch | None:
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        try:
            params = {k: self.converters[k](v) for k, v in found.groupdict().items()}
        except ValueError:  # e.g. a digit string int() refuses: match it, refuse the request
            raise BadRequest("a path parameter cannot be converted") from None
        b = self.binding
        return RouteMatch(b.path, b.tool_server, b.tool_name, params, b)


def _compile(binding: RouteBinding) -> _Compiled:
    parts = []
    converters: dict[str, Any] = {}
    for segment, param in zip(
        binding.path.split("/"), _template_params(binding.path), strict=True
    ):
        if param is None:
            parts.append(re.escape(segment))
            continue
        regex, convert = _CONVERTERS[param.converter]
        parts.append(f"(?P<{param.name}>{regex})")
        converters[param.name] = convert
    return _Compiled(re.compile("/".join(parts), re.DOTALL), converters, binding)


class RouteTable:
    """The compiled bindings; :meth:`match` finds the route of a request."""

    def __init__(self, bindings: list[RouteBinding], public_paths: Sequence[str] = ()) -> None:
        seen: set[tuple[str, str]] = set()
        self.bindings = list(bindings)
        self.public_paths = list(public_paths)
        self._static: dict[tuple[str, str], RouteBinding] = {}
        self._templated: dict[str, list[_Compiled]] = {}
        self._public = [_compile(_public_binding(entry)) for entry in self.public_paths]
        #: (method, template shape) -> the first binding of that shape (framework routes).
        self._by_shape: dict[tuple[str, str], RouteBinding] = {}
        for binding in self.bindings:
            self._by_shape.setdefault((binding.method, template_shape(binding.path)), binding)
            key = (binding.method, binding.path)
            if key in seen:
                raise ValueError(f"route {binding.method} {binding.path} is bound twice")
            seen.add(key)
            if any(p is not None for p in _template_params(binding.path)):
                self._templated.setdefault(binding.method, []).append(_compile(binding))
            else:
                self._static[key] = binding

    def match(self, method: str, path: str, raw_path: str | None = None) -> RouteMatch | None:
        """The route of ``method`` and decoded ``path``; ``None`` when unbound.

        ``path`` is what the application routes on (no mount prefix). ``raw_path`` (still
        percent-encoded, when known) decides the reserved tool route: its prefix must be
        literal and its segments are split before decoding, so ``%2F`` cannot move a
        segment boundary. A binding for the exact method wins; HEAD falls back to GET, as
        the frameworks route it. Static templates win over parameterised ones; among
        those, the first bound wins. When nothing matches, the path with its trailing
        slash toggled is tried (the frameworks redirect or route it to the same handler).
        """
        if path.startswith(_RESERVED_PREFIX) or (raw_path or "").startswith(_RESERVED_PREFIX):
            if raw_path is not None and not raw_path.startswith(_RESERVED_PREFIX):
                raise BadRequest("malformed /chio/tools path identity")
            return _reserved(raw_path if raw_path is not None else path)
        method = method.upper()
        methods = (method, "GET") if method == "HEAD" else (method,)
        for candidate in (path, _toggle_slash(path)):
            for bound_method in methods:
                found = self._lookup(bound_method, candidate)
                if found is not None:
                    return found
        return None

    def binding_for(self, method: str, template: str) -> RouteBinding | None:
        """The binding that names the framework route ``template``, if any.

        Templates are compared by shape (:func:`template_shape`): ``/notes/{note_id}``
        names Flask's ``/notes/<note_id>``, ``/n/{id:int}`` names ``/n/<int:id>``, but not
        FastAPI's ``/n/{id}`` (another converter, another set of paths).
        """
        method = method.upper()
        shape = template_shape(template)
        for bound_method in (method, "GET") if method == "HEAD" else (method,):
            binding = self._by_shape.get((bound_method, shape))
            if binding is not None:
                return binding
        return None

    def is_public_template(self, template: str) -> bool:
        """True when ``template`` is one of the ``public_paths`` or matches one."""
        if template in self.public_paths or any(
            entry.endswith(" " + template) for entry in self.public_paths
        ):
            return True
        return any(compiled.match(template) is not None for compiled in self._public)

    @staticmethod
    def is_reserved(path: str) -> bool:
        """True for a path under the reserved ``/chio/tools/`` prefix."""
        return path.startswith(_RESERVED_PREFIX)

    def _lookup(self, method: str, path: str) -> RouteMatch | None:
        binding = self._static.get((method, path))
        if binding is not None:
            return RouteMatch(binding.path, binding.tool_server, binding.tool_name, {}, binding)
        for compiled in self._templated.get(method, ()):
            found = compiled.match(path)
            if found is not None:
                return found
        for compiled in self._public:
            if compiled.binding.method != method:
                continue
            found = compiled.match(path)
            if found is not None:
                return RouteMatch(found.pattern, "", "", found.params, None, public=True)
        return None


def _public_binding(entry: str) -> RouteBinding:
    """A ``public_paths`` entry as a binding, validated and compiled the same way.

    ``"/health"`` is public for GET (and so HEAD); ``"POST /hooks/ping"`` names another
    method: a side effect is never made public by a path alone (found by the review).
    """
    method, _, path = entry.strip().rpartition(" ")
    return RouteBinding(
        method=method.strip() or "GET", path=path, tool_server="public", tool_name="public"
    )


_CANONICAL_CONVERTER = {"string": "str"}


@lru_cache(maxsize=1024)  # a pure function of the few templates an app has: once each
def template_shape(template: str) -> str:
    """A template with each parameter replaced by its converter: ``/notes/{int}``.

    Two templates of one shape match the same paths, whatever their syntax (Starlette's or
    Flask's) and parameter names. A template this module cannot parse (a Werkzeug
    converter with arguments, say) is its own shape.
    """
    try:
        params = _template_params(template)
    except ValueError:
        return template
    parts = []
    for segment, param in zip(template.split("/"), params, strict=True):
        if param is None:
            parts.append(segment)
        else:
            parts.append("{" + _CANONICAL_CONVERTER.get(param.converter, param.converter) + "}")
    return "/".join(parts)


def _toggle_slash(path: str) -> str:
    if path == "/":
        return path
    return path[:-1] if path.endswith("/") else path + "/"


def _reserved(raw_path: str) -> RouteMatch:
    segments = raw_path[len(_RESERVED_PREFIX) :].split("/")
    if len(segments) != 2:
        raise BadRequest("malformed /chio/tools path identity")
    decoded = []
    for segment in segments:
        try:
            text = unquote_to_bytes(segment).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("malformed /chio/tools path identity") from None
        if not text or "/" in text:
            raise BadRequest("malformed /chio/tools path identity")
        decoded.append(text)
    server, tool = decoded
    return RouteMatch(RESERVED_TOOL_TEMPLATE, server, tool, {"server": server, "tool": tool}, None)


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})|%(?:2[Ff]|5[Cc])")
# C0 controls, DEL, C1 controls and the backslash, decoded or raw.
_BAD_CHAR = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def check_canonical_path(path: str, raw_path: str = "", route_path: str | None = None) -> None:
    """Refuse (400) a path that frameworks may normalise differently (PROTOCOL.md 5.1).

    ``path`` is the decoded path; ``raw_path`` the percent-encoded path the application
    routes on, when the server gives it, and ``route_path`` its decoded form as the server
    decoded it. Refused: an empty segment (``//``; a single trailing slash is allowed), a
    ``.`` or ``..`` segment (also percent-encoded), a percent-encoded ``/`` or ``\\``, a
    raw ``\\``, control characters, invalid percent-encoding, invalid UTF-8, raw bytes
    outside ASCII in the encoded form, a path that does not start with ``/``, and a raw
    path that does not decode to the path the server decoded (someone normalised it).
    """
    if raw_path:
        if _BAD_ESCAPE.search(raw_path):
            raise BadRequest("request path has an invalid or forbidden percent-escape")
        if not raw_path.isascii() or _BAD_CHAR.search(raw_path):
            raise BadRequest("request path has characters that must be percent-encoded")
        try:
            decoded = unquote_to_bytes(raw_path).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("request path is not valid UTF-8") from None
        if route_path is not None and decoded != route_path:
            raise BadRequest("request path was normalised before it reached the application")
        _check_segments(raw_path)
    _check_segments(path)
    if _BAD_CHAR.search(path):
        raise BadRequest("request path has a control character or a backslash")


def _check_segments(path: str) -> None:
    if not path.startswith("/"):
        raise BadRequest("request path must start with '/'")
    segments = path[1:].split("/")
    for index, segment in enumerate(segments):
        if segment in (".", ".."):
            raise BadRequest("request path has a dot segment")
        if not segment and index < len(segments) - 1:
            raise BadRequest("request path has an empty segment ('//')")
