"""Flask: Werkzeug's URL map decides which route a request is (PROTOCOL.md 5.1).

:func:`native_route` asks the app exactly what ``flask.ctx.RequestContext`` asks when it
dispatches: ``app.create_url_adapter(request).match(return_rule=True)``, so converters,
``strict_slashes``, ``merge_slashes``, host and subdomain matching are Werkzeug's own. The
checked pattern is the rule's template (``/notes/<int:note_id>``) and the path parameters
are the converted ``view_args`` the view function receives.
"""

from __future__ import annotations

from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from ._declare import NativeRoute, declaration_of

__all__ = ["native_route"]


def native_route(app: Any, environ: dict[str, Any]) -> NativeRoute:
    """What ``app`` does with the request ``environ`` (the environ is not changed)."""
    request = app.request_class(dict(environ))
    try:
        adapter = app.create_url_adapter(request)
        rule, args = adapter.match(return_rule=True)
    except RequestRedirect:
        return NativeRoute("redirect")
    except MethodNotAllowed:
        return NativeRoute("method_not_allowed")
    except NotFound:
        return NativeRoute("not_found")
    except HTTPException:  # a bad Host, a websocket mismatch: Flask answers the error
        return NativeRoute("not_found")
    view = app.view_functions.get(rule.endpoint)
    view_class = getattr(view, "view_class", None)  # flask.views.View.as_view
    method = str(environ.get("REQUEST_METHOD", "GET")).lower()
    handler = None
    if view_class is not None:  # MethodView: HEAD runs get() when there is no head()
        handler = getattr(view_class, method, None)
        if handler is None and method == "head":
            handler = getattr(view_class, "get", None)
    return NativeRoute(
        "matched",
        pattern=rule.rule,
        params=dict(args),
        declaration=declaration_of(handler, view, view_class),
    )
