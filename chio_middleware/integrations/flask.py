"""Chio for Flask apps: a Flask extension with route-level declarations.

::

    from chio_middleware.integrations.flask import Chio

    chio = Chio()                                   # or Chio(app)

    @app.post("/notes")
    @chio.tool("srv-notes", "write_note")
    def write_note():
        caller = g.chio                             # the verified caller (ChioContext)

    chio.init_app(app)                              # reads CHIO_* keys of app.config

Settings come from ``settings=`` or from ``app.config`` keys with the ``CHIO_`` prefix (as
Flask extensions read theirs), over the environment. Werkzeug's URL map decides which
route a request is (PROTOCOL.md 5.1). The route coverage is checked when ``init_app`` runs
and again at the first request, for routes registered later: call ``init_app`` after the
routes and blueprints are registered, so that ``unbound_routes="refuse"`` fails at start-up.
"""

from __future__ import annotations

from typing import Any

from ..core.context import ChioContext
from ..runtime import ChioRuntime
from ..settings import ChioSettings
from ..wsgi import ChioWSGIMiddleware
from ._base import ChioIntegration
from ._declare import PUBLIC
from .coverage import flask_coverage

__all__ = ["PUBLIC", "Chio", "ChioContext", "settings_from_config"]

_PREFIX = "CHIO_"


def settings_from_config(config: Any) -> ChioSettings:
    """``ChioSettings`` from a Flask config's ``CHIO_*`` keys (over the environment)."""
    values = {
        key[len(_PREFIX) :].lower(): value
        for key, value in config.items()
        if key.startswith(_PREFIX)
    }
    return ChioSettings(**values)


class Chio(ChioIntegration):
    """The Chio extension of Flask apps (``app.extensions["chio"]``)."""

    def _prepare(self) -> None:
        self.runtime: ChioRuntime | None = None  # built by init_app, from app.config too

    def init_app(self, app: Any) -> None:
        """Wrap ``app.wsgi_app``, expose ``g.chio``, and check the route coverage."""
        settings = self._settings
        if settings is None:
            settings = settings_from_config(app.config)
        runtime = ChioRuntime(settings, **self._options)
        self.runtime = runtime
        middleware = ChioWSGIMiddleware(
            app.wsgi_app, runtime=runtime, render_denial=self.render_denial, flask_app=app
        )
        app.wsgi_app = middleware
        app.extensions["chio"] = self
        failure = runtime.report_coverage(flask_coverage(app, runtime.engine.config.routes))
        if failure is not None:
            raise ValueError(failure)
        app.before_request(_expose_context)
        known = len(list(app.url_map.iter_rules()))

        def late_coverage() -> str | None:  # routes registered after init_app
            if len(list(app.url_map.iter_rules())) == known:
                return None
            rows = flask_coverage(app, runtime.engine.config.routes)
            return runtime.report_coverage(rows, again=True)

        middleware.first_request_check = late_coverage


def _expose_context() -> None:
    from flask import g, request

    g.chio = request.environ.get("chio")
