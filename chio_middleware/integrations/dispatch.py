"""Where the framework dispatches: the request must still be the one that was checked.

The middleware checks the route and arguments the framework's router would find for the
request as the middleware received it (PROTOCOL.md 5.1-5.2). Whatever runs between the
middleware and the router can change that request: a ``ProxyFix`` that takes the host
from ``X-Forwarded-Host`` (Flask's ``host_matching``, Starlette's ``Host`` routes), a
method-override middleware, a prefix fix that moves ``SCRIPT_NAME``. The router then
dispatches a route nobody checked (found by outside reviews, for Flask and for ASGI apps
wrapped from outside).

So the middleware records the inputs that decide the route and the arguments, and a hook
at the router's own entry compares them with what the router is about to dispatch on:
Starlette's ``Router.app`` (wrapped in place, innermost, below the router's own
middleware; on every router the walk can descend into, so a mount's or a sub-app's own
middleware is covered too, each compared with the scope the walk routed that router on,
and a router the walk did not pass through refused) and Flask's first ``before_request``
function (after URL matching, before the view). The headers compared are those that decide
the route or the arguments: ``host``, ``content-type``, ``content-length``,
``transfer-encoding``, ``cookie`` and the route's FastAPI ``Header()`` names; a middleware
that adds a request id passes. A difference refuses the request (503,
``chio_unavailable``: the middleware cannot vouch for it) and logs which input changed;
the view never runs. Installing the middleware innermost is the cure the log names.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..logs import get_logger

__all__ = [
    "ASGI_CHECKED",
    "ROUTED_HEADERS",
    "WSGI_CHECKED",
    "WSGI_CHECKED_PARAMS",
    "asgi_expectations",
    "asgi_inputs",
    "install_asgi_check",
    "install_flask_check",
    "wsgi_inputs",
]

logger = get_logger()

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: The scope / environ key under which the middleware leaves the inputs it checked.
ASGI_CHECKED = "chio.checked_request"
WSGI_CHECKED = "chio.checked_request"
#: The path parameters checked (Flask: compared with ``request.view_args`` once Flask's
#: ``url_value_preprocessors``, which run before ``before_request``, have had them).
WSGI_CHECKED_PARAMS = "chio.checked_view_args"

_ASGI_NAMES = ("method", "path", "root_path", "query_string", "headers")
#: The headers that decide a Starlette route (``Host``) or the arguments (the body's type
#: and framing, the cookies FastAPI's ``Cookie()`` reads).
ROUTED_HEADERS = frozenset(
    {b"host", b"content-type", b"content-length", b"transfer-encoding", b"cookie"}
)
#: What Werkzeug's URL map and Flask's request parsing read (the host for host matching,
#: the script root and path for the rule, the method, the query and the body's type).
_WSGI_KEYS = (
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "HTTP_HOST",
    "SERVER_NAME",
    "SERVER_PORT",
    "CONTENT_TYPE",
)


def _message(changed: list[str]) -> str:
    return (
        f"the request's {', '.join(changed)} changed between the Chio check and the "
        "router, so the route or arguments dispatched are not the ones checked; refusing. "
        "Install the Chio middleware innermost (after ProxyFix and any middleware that "
        "rewrites the request)."
    )


# -- ASGI (Starlette, FastAPI) ---------------------------------------------------------------


def asgi_inputs(scope: Scope, names: frozenset[bytes]) -> tuple[Any, ...]:
    """What Starlette's router and the argument view read from an HTTP scope: the method,
    path, root path, query and the values of the headers ``names`` (lowercase), in order."""
    headers = tuple(
        (key, value) for key, value in scope.get("headers", ()) if key.lower() in names
    )  # a copy: MutableHeaders edits the list in place
    return (
        scope.get("method"),
        scope.get("path"),
        scope.get("root_path", ""),
        scope.get("query_string", b""),
        headers,
    )


def asgi_expectations(
    trail: tuple[tuple[Any, Any], ...], header_names: tuple[str, ...]
) -> tuple[frozenset[bytes], dict[int, tuple[Any, ...]]]:
    """For each router walked, the inputs it must dispatch on (stored in the scope)."""
    names = ROUTED_HEADERS
    if header_names:
        names = names.union(name.encode("latin-1") for name in header_names)
    return names, {id(router): asgi_inputs(scope, names) for router, scope in trail}


async def _refuse(send: Send, changed: list[str]) -> None:
    logger.error("chio_request_changed_before_routing", changed=", ".join(changed))
    body = json.dumps(
        {"error": "chio_unavailable", "message": _message(changed), "status": 503}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _RouterEntryCheck:
    """Wraps ``Router.app``: refuses a request whose inputs changed since the check."""

    def __init__(self, app: Any, router: Any) -> None:
        self.app = app  # the ``.app`` link keeps the router findable through this wrapper
        self._router_id = id(router)

    async def __call__(self, scope: Scope, receive: Any, send: Send) -> None:
        checked = scope.get(ASGI_CHECKED)
        if checked is not None and scope.get("type") == "http":
            names, levels = checked
            expected = levels.get(self._router_id)
            if expected is None:  # routed to a router the check's walk did not reach
                await _refuse(send, ["route (it reached a router the check did not walk)"])
                return
            found = asgi_inputs(scope, names)
            if found != expected:
                pairs = zip(_ASGI_NAMES, found, expected, strict=True)
                await _refuse(send, [name for name, now, then in pairs if now != then])
                return
        await self.app(scope, receive, send)


def install_asgi_check(router: Any) -> bool:
    """Put the entry check at ``router``'s dispatch (once); ``False`` when it cannot."""
    target = getattr(router, "app", None)
    holder: Any = router
    attribute = "middleware_stack"
    node = getattr(router, attribute, None)
    for _ in range(64):  # down the router's own middleware to its dispatch method
        if node is None:
            return False
        if isinstance(node, _RouterEntryCheck):  # installed already
            return True
        if node == target:
            setattr(holder, attribute, _RouterEntryCheck(node, router))
            return True
        holder, attribute, node = node, "app", getattr(node, "app", None)
    return False


# -- WSGI (Flask) ----------------------------------------------------------------------------


def wsgi_inputs(environ: MutableMapping[str, Any]) -> tuple[Any, ...]:
    """What Werkzeug's URL map and Flask's request read from a WSGI environ."""
    return tuple(environ.get(key) for key in _WSGI_KEYS)


def _flask_entry_check() -> None:
    from flask import abort, request

    environ = request.environ
    expected = environ.get(WSGI_CHECKED)
    if expected is None:
        return
    found = wsgi_inputs(environ)
    if found != expected:
        pairs = zip(_WSGI_KEYS, found, expected, strict=True)
        changed = [key for key, now, then in pairs if now != then]
        logger.error("chio_request_changed_before_routing", changed=", ".join(changed))
        abort(503, description=_message(changed))
    checked = environ.get(WSGI_CHECKED_PARAMS)
    if checked is not None:
        # A preprocessor may take a value out (the view then reads less); one that adds
        # or changes a value hands the view an argument that was not checked.
        for name, value in (request.view_args or {}).items():
            if name not in checked or _changed(checked[name], value):
                changed = [f"path parameter {name[:64]!r}"]
                logger.error("chio_request_changed_before_routing", changed=changed[0])
                abort(503, description=_message(changed))


_IDENTITY_EQ: Any = object.__eq__


def _changed(checked: Any, value: Any) -> bool:
    """True when a path parameter is not the value checked. Flask converts the path again
    for the view, so a converter's object of a type that compares by identity is a new,
    equal-looking object: its type is compared (no check reads such a value anyway)."""
    if type(checked) is not type(value):
        return True
    if getattr(type(value), "__eq__", None) is _IDENTITY_EQ:
        return False
    return bool(checked != value)


def install_flask_check(app: Any) -> None:
    """Run the entry check first among ``app``'s ``before_request`` functions (once)."""
    functions = app.before_request_funcs.setdefault(None, [])
    if _flask_entry_check not in functions:
        functions.insert(0, _flask_entry_check)
