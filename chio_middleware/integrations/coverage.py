"""Which framework routes are bound, public or unbound: the table logged at start-up.

``unbound_routes = "refuse"`` turns an unbound framework route into a start-up failure
that names it, so a route added without a declaration cannot fall to the default policy
unnoticed (issue: bindings drifting from the app's real routes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..core.routing import RouteBinding, RouteTable, template_shape
from ._declare import Conflict, Public, ToolDeclaration

__all__ = [
    "CONFLICT",
    "CoverageRow",
    "flask_coverage",
    "mixed_declarations",
    "orphan_bindings",
    "render_coverage",
    "starlette_coverage",
    "unbound",
]

_METHODS_DEFAULT = ("GET",)
#: The start of a row whose route is declared as two tools (a start-up failure).
CONFLICT = "conflict: "
_SKIPPED = frozenset({"HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class CoverageRow:
    """One framework route and what protects it: ``tool srv/name``, ``public`` or ``unbound``."""

    method: str
    pattern: str
    binding: str

    @property
    def unbound(self) -> bool:
        """True when no declaration, binding or public path covers the route."""
        return self.binding == "unbound"


def _describe(declaration: Any, method: str, pattern: str, table: RouteTable) -> str:
    if isinstance(declaration, Conflict):
        return f"{CONFLICT}{declaration}"
    if isinstance(declaration, Public):
        return "public"
    if isinstance(declaration, ToolDeclaration):
        nonce = " (nonce)" if declaration.require_nonce else ""
        return f"tool {declaration.tool_server}/{declaration.tool_name}{nonce}"
    binding = table.binding_for(method, pattern)
    if binding is not None:
        nonce = " (nonce)" if binding.require_nonce else ""
        return f"tool {binding.tool_server}/{binding.tool_name}{nonce} (settings)"
    if table.is_public_template(pattern):
        return "public (public_paths)"
    return "unbound"


def starlette_coverage(router: Any, table: RouteTable) -> list[CoverageRow]:
    """Every route of a Starlette/FastAPI router (mounts included) and its protection."""
    from .starlette_routing import endpoint_declaration, find_router

    rows: list[CoverageRow] = []

    def walk(routes: Iterable[Any], prefix: str, depth: int) -> None:
        for route in routes:
            contexts = getattr(route, "effective_route_contexts", None)
            if callable(contexts) and not hasattr(route, "endpoint") and depth < 16:
                # FastAPI's include_router entry: its routes, prefixes applied.
                walk([_as_route(c) for c in contexts()], prefix, depth + 1)
                continue
            path = prefix + str(getattr(route, "path", None) or getattr(route, "path_format", ""))
            inner = find_router(getattr(route, "app", None)) if hasattr(route, "routes") else None
            if inner is not None and depth < 16:
                walk(inner.routes, path, depth + 1)
                continue
            if not hasattr(route, "endpoint"):
                if hasattr(route, "routes"):  # a mounted app of another kind
                    rows.append(CoverageRow("*", path + "/...", "unbound (opaque mount)"))
                continue
            methods = getattr(route, "methods", None) or _class_methods(route) or _METHODS_DEFAULT
            for method in sorted(set(methods) - _SKIPPED) or ["GET"]:
                declared = endpoint_declaration(route, method)
                rows.append(
                    CoverageRow(method, path, _describe(declared, method, path, table))
                )

    walk(router.routes, "", 0)
    return rows


def _class_methods(route: Any) -> tuple[str, ...]:
    """The methods a class-based endpoint (``HTTPEndpoint``) answers: its handlers."""
    endpoint = getattr(route, "endpoint", None)
    if not isinstance(endpoint, type):
        return ()
    names = ("get", "post", "put", "patch", "delete")
    return tuple(name.upper() for name in names if callable(getattr(endpoint, name, None)))


def _as_route(context: Any) -> Any:
    """A FastAPI effective route context as a route: a mount stays a mount."""
    starlette_route = getattr(context, "starlette_route", None)
    if starlette_route is not None and hasattr(starlette_route, "routes"):
        return starlette_route
    return context


def flask_coverage(app: Any, table: RouteTable) -> list[CoverageRow]:
    """Every rule of a Flask app's URL map (static files aside) and its protection."""
    from ._declare import declaration_of

    rows: list[CoverageRow] = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        view = app.view_functions.get(rule.endpoint)
        view_class = getattr(view, "view_class", None)
        for method in sorted(set(rule.methods or ()) - _SKIPPED) or ["GET"]:
            handler = getattr(view_class, method.lower(), None) if view_class else None
            declared = declaration_of(handler, view, view_class)
            described = _describe(declared, method, rule.rule, table)
            rows.append(CoverageRow(method, rule.rule, described))
    return rows


def orphan_bindings(rows: Iterable[CoverageRow], table: RouteTable) -> list[RouteBinding]:
    """Settings bindings that name no framework route: they would protect nothing.

    A binding names a route of the same method (HEAD: GET) and template shape, trailing
    slash aside; a binding under an opaque mount (an app whose routes cannot be seen) is
    not judged.
    """
    listed = list(rows)
    opaque = [r.pattern[: -len("/...")] for r in listed if r.pattern.endswith("/...")]
    shapes = {(r.method, _loose(template_shape(r.pattern))) for r in listed}
    orphans = []
    for binding in table.bindings:
        if any(binding.path.startswith(prefix + "/") for prefix in opaque):
            continue
        method = "GET" if binding.method == "HEAD" else binding.method
        if (method, _loose(template_shape(binding.path))) not in shapes:
            orphans.append(binding)
    return orphans


def _loose(shape: str) -> str:
    return shape.rstrip("/") or "/"


_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def mixed_declarations(rows: Iterable[CoverageRow]) -> list[str]:
    """Routes where one declared tool covers both a safe and a side-effect method.

    A read grant would then authorise the view's DELETE branch (found by the review):
    such a route must declare one tool per method (one view per method).
    """
    by_route: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        if row.binding.startswith("tool ") and not row.binding.endswith("(settings)"):
            by_route.setdefault((row.pattern, row.binding), set()).add(row.method)
    return [
        f"{'/'.join(sorted(methods))} {pattern} ({binding})"
        for (pattern, binding), methods in by_route.items()
        if methods & _SAFE and methods - _SAFE
    ]


def unbound(rows: Iterable[CoverageRow]) -> list[CoverageRow]:
    """The rows no declaration, binding or public path covers."""
    return [row for row in rows if row.binding.startswith("unbound")]


def render_coverage(rows: Iterable[CoverageRow]) -> str:
    """The coverage table as aligned text lines."""
    listed = list(rows)
    width = max((len(f"{r.method} {r.pattern}") for r in listed), default=0)
    return "\n".join(f"  {f'{r.method} {r.pattern}':<{width}}  {r.binding}" for r in listed)
