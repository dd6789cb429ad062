"""Which tool a test request invokes, decided as the middleware decides it.

The app's own router and its ``@tool``/``@public`` declarations first (Starlette, FastAPI,
Flask), then the settings' bindings and policy file, then the reserved
``/chio/tools/{server}/{tool}`` path: the same :func:`route_for` the adapters call, so a
test never repeats the route-to-tool map the app already declares.
"""

from __future__ import annotations

from typing import Any

from ..client.credentials import ToolResolver
from ..core.engine import UNBOUND_TOOL_NAME, UNBOUND_TOOL_SERVER
from ..core.errors import ChioError
from ..core.routing import RouteBinding, RouteTable
from ..integrations._declare import NativeRoute, route_for
from ..settings import ChioSettings, load_policy_file

__all__ = ["is_flask_app", "route_resolver"]

_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def is_flask_app(app: Any) -> bool:
    """True for a Flask app (duck-typed: Flask is an optional dependency)."""
    return hasattr(app, "url_map") and hasattr(app, "create_url_adapter")


def _starlette_router(app: Any) -> Any | None:
    """The router of a Starlette/FastAPI app, looking through ASGI wrappers (``.app``)."""
    from ..integrations.starlette_routing import find_router

    return find_router(app)


def _route_table(settings: ChioSettings | None) -> RouteTable:
    if settings is None:
        return RouteTable([])
    routes: list[RouteBinding] = list(settings.routes)
    if settings.policy_file is not None:
        routes.extend(load_policy_file(settings.policy_file).routes)
    public_paths = list(getattr(settings, "public_paths", ()) or ())
    return RouteTable(routes, public_paths)


def _native(app: Any, method: str, path: str) -> NativeRoute:
    if app is None:
        return NativeRoute("opaque")
    if is_flask_app(app):
        from ..integrations.flask_routing import native_route as flask_route

        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path.encode("utf-8").decode("latin-1"),
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "HTTP_HOST": "localhost",
            "wsgi.url_scheme": "http",
        }
        return flask_route(app, environ)
    router = _starlette_router(app)
    if router is None:
        return NativeRoute("opaque")
    from ..integrations.starlette_routing import native_route as starlette_route

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode("utf-8"),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
    }
    return starlette_route(router, scope)


def route_resolver(app: Any | None, settings: ChioSettings | None) -> ToolResolver:
    """``(method, path) -> (server, tool)`` for the credentials, or ``None`` (unsigned).

    A public route is sent without Chio headers; an unbound request with a side effect is
    signed for the reference's synthetic tool (PROTOCOL.md 5.3), an unbound safe one is
    not signed. A path the middleware will refuse anyway (400) is sent unsigned.
    """
    table = _route_table(settings)

    def resolve(method: str, path: str) -> tuple[str, str] | None:
        try:
            match = route_for(_native(app, method, path), method, path, table)
        except ChioError:
            return None
        if match is None:
            return None if method in _SAFE else (UNBOUND_TOOL_SERVER, UNBOUND_TOOL_NAME)
        if match.public:
            return None
        return match.tool_server, match.tool_name

    return resolve
