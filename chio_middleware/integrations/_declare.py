"""Route-level declarations: which tool an endpoint is, or that it is public.

``@tool("srv-notes", "write_note", nonce=True)`` and ``@public`` only mark the endpoint
function (an attribute, no wrapper: FastAPI still sees the function's own signature); the
framework resolvers read the mark of the endpoint the framework's router dispatches to.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar, overload

from ..core.engine import UNBOUND_TOOL_NAME, UNBOUND_TOOL_SERVER
from ..core.errors import AccessDenied, BadRequest
from ..core.routing import (
    RESERVED_TOOL_TEMPLATE,
    RouteBinding,
    RouteMatch,
    RouteTable,
    template_shape,
)

__all__ = [
    "ATTRIBUTE",
    "PUBLIC",
    "Conflict",
    "NativeRoute",
    "Public",
    "ToolDeclaration",
    "declaration_of",
    "public",
    "route_for",
    "tool",
    "wrapped_apps",
]

F = TypeVar("F", bound=Callable[..., Any])

_RESERVED = template_shape(RESERVED_TOOL_TEMPLATE)

#: The attribute an endpoint's declaration is stored under.
ATTRIBUTE: Final = "__chio__"


@dataclass(frozen=True, slots=True)
class ToolDeclaration:
    """The tool an endpoint is, and what it requires (a route-level ``RouteBinding``)."""

    tool_server: str
    tool_name: str
    require_dpop: bool = True
    require_nonce: bool = False
    #: FastAPI inspects a dependency's signature: as ``Depends(tool(...))`` it takes none.
    __signature__: ClassVar[inspect.Signature] = inspect.Signature()

    def __post_init__(self) -> None:
        if not self.tool_server or not self.tool_name:
            raise ValueError("tool(): tool_server and tool_name must not be empty")

    @overload
    def __call__(self, endpoint: None = None) -> None: ...

    @overload
    def __call__(self, endpoint: F) -> F: ...

    def __call__(self, endpoint: F | None = None) -> F | None:
        """Mark ``endpoint`` (as a decorator); as a FastAPI dependency, do nothing.

        ``Depends(tool(...))`` on a route or an ``APIRouter`` declares the tool of every
        route it applies to; the resolver finds it among the route's dependencies.
        """
        if endpoint is None:
            return None
        _mark(endpoint, self)
        return endpoint


class Public:
    """The mark of an endpoint that needs no capability (presented ones are still verified)."""

    def __repr__(self) -> str:
        return "PUBLIC"


PUBLIC: Final = Public()


def tool(
    tool_server: str, tool_name: str, *, nonce: bool = False, dpop: bool = True
) -> ToolDeclaration:
    """Declare the endpoint below as ``tool_name`` of ``tool_server``.

    ``nonce=True`` requires a single-use execution nonce (PROTOCOL.md 4); ``dpop=False``
    lets a call without a DPoP proof through (a grant's ``dpop_required`` still wins).
    """
    return ToolDeclaration(tool_server, tool_name, require_dpop=dpop, require_nonce=nonce)


def public(endpoint: F) -> F:
    """Declare the endpoint as public: no capability needed, even under ``deny``."""
    _mark(endpoint, PUBLIC)
    return endpoint


def _mark(endpoint: Any, declaration: ToolDeclaration | Public) -> None:
    existing = getattr(endpoint, ATTRIBUTE, None)
    if existing is not None and existing != declaration:
        name = getattr(endpoint, "__qualname__", repr(endpoint))
        raise ValueError(f"endpoint {name} is declared twice ({existing!r} and {declaration!r})")
    setattr(endpoint, ATTRIBUTE, declaration)


@dataclass(frozen=True, slots=True)
class Conflict:
    """Several declarations that disagree on one route (e.g. an ``APIRouter``'s
    ``Depends(tool(...))`` and the route's own): refused, at start-up and per request."""

    declarations: tuple[ToolDeclaration | Public, ...]

    def __str__(self) -> str:
        return " and ".join(
            "public"
            if isinstance(d, Public)
            else f"tool {d.tool_server}/{d.tool_name}" + (" (nonce)" if d.require_nonce else "")
            for d in self.declarations
        )


def one_declaration(
    found: list[ToolDeclaration | Public],
) -> ToolDeclaration | Public | Conflict | None:
    """The declaration ``found`` agrees on, ``None`` for none, or their ``Conflict``."""
    distinct = list(dict.fromkeys(found))
    if not distinct:
        return None
    if len(distinct) == 1:
        return distinct[0]
    return Conflict(tuple(distinct))


def declaration_of(*candidates: Any) -> ToolDeclaration | Public | None:
    """The first declaration found on ``candidates`` (an endpoint, its method handler...).

    A ``functools.partial`` of a declared function is that function's endpoint (the
    frameworks call through it; found by an outside review: the route ran as unbound).
    """
    for candidate in candidates:
        for _ in range(16):
            if isinstance(candidate, ToolDeclaration | Public):
                return candidate
            found = getattr(candidate, ATTRIBUTE, None)
            if isinstance(found, ToolDeclaration | Public):
                return found
            if not isinstance(candidate, functools.partial):
                break
            candidate = candidate.func
    return None


@dataclass(frozen=True, slots=True)
class NativeRoute:
    """What a framework's router does with a request.

    ``outcome``: ``"matched"`` (a handler runs), ``"method_not_allowed"`` (405),
    ``"redirect"`` (slash rules), ``"not_found"``, or ``"opaque"`` (a mounted app whose
    routes cannot be seen). ``pattern`` is the full template of the matched route
    (mount prefixes included), ``params`` the converted path parameters the handler gets.
    """

    outcome: str
    pattern: str | None = None
    params: dict[str, Any] | None = None
    declaration: ToolDeclaration | Public | Conflict | None = None
    #: Parameters the framework will hand over as another value than their text.
    rewritten: list[str] | None = None
    #: Why the handler gets the body as bytes (FastAPI, a non-JSON Content-Type), if so.
    raw_body: str | None = None
    #: The routers walked to the route, each with the scope it dispatches on (ASGI).
    trail: tuple[tuple[Any, Any], ...] = ()
    #: Request headers the handler reads as arguments (FastAPI ``Header()``), lowercase.
    header_names: tuple[str, ...] = ()
    #: The body members the handler reads as another value (see ``RouteMatch``).
    body_check: Callable[[Any, bool], list[str]] | None = None


def wrapped_apps(app: Any, limit: int = 64) -> Iterator[Any]:
    """``app``, the app it wraps, and so on down the ``.app`` links that ASGI and WSGI
    middleware keep (ProxyFix, ``Mount(middleware=...)``, a built middleware stack)."""
    node = app
    for _ in range(limit):
        if node is None:
            return
        yield node
        node = getattr(node, "app", None)


#: (declaration, method, route pattern) -> the RouteBinding the declaration makes there.
_BINDINGS: dict[tuple[ToolDeclaration, str, str], RouteBinding] = {}


def route_for(native: NativeRoute, method: str, path: str, table: RouteTable) -> RouteMatch | None:
    """The route to check for a request the framework routes as ``native`` (:func:`_route`);
    a body the handler reads as bytes is marked so (``RouteMatch.raw_body``)."""
    match = _route(native, method, path, table)
    changed = native.raw_body or native.rewritten or native.body_check
    if match is not None and native.outcome == "matched" and changed:
        return dataclasses.replace(
            match,
            raw_body=native.raw_body,
            rewritten=tuple(native.rewritten or ()),
            body_check=native.body_check,
        )
    return match


def _route(native: NativeRoute, method: str, path: str, table: RouteTable) -> RouteMatch | None:
    """The route to check for a request the framework routes as ``native`` (PROTOCOL.md 5.1).

    A matched route takes its endpoint's declaration, else the settings binding of its
    template shape, else a settings template that matches the path, else it is an unbound
    route (``unbound=True``) that keeps the framework's pattern and path parameters. A
    request the framework does not dispatch to a handler (405, a slash redirect, 404, an
    opaque mount) gets the settings templates' match, which can only add checks (``None``:
    unbound). A route the middleware cannot inspect, a reserved ``/chio/tools/`` path
    dispatched elsewhere, or a typed parameter the handler would read as another value, is
    refused.
    """
    if native.outcome == "uninspectable":
        raise AccessDenied(
            "the application dispatches this request to a route the middleware cannot "
            "inspect; refusing",
            guard="RouteGuard",
        )
    if table.is_reserved(path):
        if native.outcome == "matched" and template_shape(native.pattern or "") != _RESERVED:
            # The framework runs another route than the one the reserved path names.
            raise BadRequest("the reserved /chio/tools/ path is dispatched to another route")
        return table.match(method, path)
    if native.outcome != "matched" or native.pattern is None:
        return table.match(method, path)
    params = dict(native.params or {})
    declared = native.declaration
    if isinstance(declared, Conflict):  # start-up refuses it too; routes added since
        raise AccessDenied(
            f"the route {native.pattern[:96]!r} is declared as {str(declared)[:160]}; "
            "declare it once",
            guard="RouteGuard",
        )
    if isinstance(declared, Public):
        return RouteMatch(native.pattern, "", "", params, None, public=True)
    if isinstance(declared, ToolDeclaration):
        key = (declared, method, native.pattern)
        binding = _BINDINGS.get(key)
        if binding is None:  # a frozen model: one per declared route and method, shared
            binding = RouteBinding.model_construct(
                method=method,
                path=native.pattern,
                tool_server=declared.tool_server,
                tool_name=declared.tool_name,
                require_dpop=declared.require_dpop,
                require_nonce=declared.require_nonce,
            )
            if len(_BINDINGS) >= 4096:  # methods are the client's texts: a bounded memo
                _BINDINGS.clear()
            _BINDINGS[key] = binding
        return RouteMatch(native.pattern, declared.tool_server, declared.tool_name, params, binding)
    named = table.binding_for(method, native.pattern)
    if named is None:
        legacy = table.match(method, path)
        if legacy is not None and legacy.public:
            return legacy
        named = legacy.binding if legacy is not None else None
    if named is None:
        # Unbound, but a route the framework dispatches: its pattern names the receipt and
        # its path parameters are arguments the constraints and guards see (PROTOCOL.md 5.3).
        return RouteMatch(
            native.pattern, UNBOUND_TOOL_SERVER, UNBOUND_TOOL_NAME, params, None, unbound=True
        )
    return RouteMatch(native.pattern, named.tool_server, named.tool_name, params, named)
