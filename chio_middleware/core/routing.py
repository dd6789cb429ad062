"""Route bindings and matching (PROTOCOL.md 5).

A :class:`RouteBinding` maps ``(method, path template)`` to ``(tool_server, tool_name)``
and the route's requirements. Templates use ``{name}`` for exactly one path segment. The
reserved template ``/chio/tools/{server}/{tool}`` is always bound, to the tool its
percent-decoded segments name. The route pattern, path parameters and tool of a request
come from the binding, never from anything else the client sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import BadRequest

__all__ = ["RESERVED_TOOL_TEMPLATE", "RouteBinding", "RouteMatch", "RouteTable"]

RESERVED_TOOL_TEMPLATE = "/chio/tools/{server}/{tool}"
_RESERVED_PREFIX = "/chio/tools/"
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})


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
        names = _PARAM.findall(value)
        if len(names) != len(set(names)):
            raise ValueError(f"route template {value!r} repeats a parameter name")
        for segment in value.split("/"):
            if ("{" in segment or "}" in segment) and not _PARAM.fullmatch(segment):
                raise ValueError(f"a parameter must be a whole segment in {value!r}")
        return value

    def policy_view(self) -> dict[str, Any]:
        """This binding as it enters the policy hash."""
        return self.model_dump()


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """A request's route: its pattern, tool, path parameters and the binding (if any)."""

    pattern: str
    tool_server: str
    tool_name: str
    params: dict[str, str]
    binding: RouteBinding | None

    @property
    def reserved(self) -> bool:
        """True for the reserved ``/chio/tools/{server}/{tool}`` route."""
        return self.binding is None


def _compile(template: str) -> re.Pattern[str]:
    parts = []
    for segment in template.split("/"):
        match = _PARAM.fullmatch(segment)
        parts.append(f"(?P<{match.group(1)}>[^/]+)" if match else re.escape(segment))
    return re.compile("/".join(parts))


class RouteTable:
    """The compiled bindings; :meth:`match` finds the route of a request."""

    def __init__(self, bindings: list[RouteBinding]) -> None:
        seen: set[tuple[str, str]] = set()
        self.bindings = list(bindings)
        self._static: dict[tuple[str, str], RouteBinding] = {}
        self._templated: list[tuple[str, re.Pattern[str], RouteBinding]] = []
        for binding in self.bindings:
            key = (binding.method, binding.path)
            if key in seen:
                raise ValueError(f"route {binding.method} {binding.path} is bound twice")
            seen.add(key)
            if _PARAM.search(binding.path):
                self._templated.append((binding.method, _compile(binding.path), binding))
            else:
                self._static[key] = binding

    def match(self, method: str, path: str, raw_path: str | None = None) -> RouteMatch | None:
        """The route of ``method`` and decoded ``path``; ``None`` when unbound.

        ``path`` is what the application routes on (no mount prefix). ``raw_path`` (still
        percent-encoded, when known) decides the reserved tool route: its prefix must be
        literal and its segments are split before decoding, so ``%2F`` cannot move a
        segment boundary. A binding for the exact method wins; HEAD falls back to GET, as
        the frameworks route it. Static templates win over parameterised ones; among
        those, the first bound wins.
        """
        if path.startswith(_RESERVED_PREFIX) or (raw_path or "").startswith(_RESERVED_PREFIX):
            if raw_path is not None and not raw_path.startswith(_RESERVED_PREFIX):
                raise BadRequest("malformed /chio/tools path identity")
            return _reserved(raw_path if raw_path is not None else path)
        method = method.upper()
        found = self._lookup(method, path)
        if found is None and method == "HEAD":
            found = self._lookup("GET", path)
        return found

    def _lookup(self, method: str, path: str) -> RouteMatch | None:
        binding = self._static.get((method, path))
        if binding is not None:
            return RouteMatch(binding.path, binding.tool_server, binding.tool_name, {}, binding)
        for bound_method, regex, binding in self._templated:
            if bound_method != method:
                continue
            found = regex.fullmatch(path)
            if found:
                return RouteMatch(
                    binding.path, binding.tool_server, binding.tool_name, found.groupdict(), binding
                )
        return None


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
