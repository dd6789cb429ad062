"""Chio for Starlette apps: ``chio = Chio(app, settings=...)`` and route-level declarations.

::

    from chio_middleware.integrations.starlette import Chio

    chio = Chio(settings=ChioSettings(...))        # every setting checked here, at import

    @chio.tool("srv-notes", "write_note")
    async def write_note(request):
        context = chio.context(request)            # the verified caller (ChioContext)
        ...

    app = Starlette(routes=[Route("/notes", write_note, methods=["POST"])])
    chio.init_app(app)                             # adds the middleware

The app's own router decides which route a request is (PROTOCOL.md 5.1); the start-up
(lifespan) logs which routes are bound and fails under ``unbound_routes="refuse"``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection

from ..asgi import ChioMiddleware, ChioStartupError
from ..core.context import ChioContext
from ..runtime import ChioRuntime
from ..workers import restarts_workers_that_fail_to_import
from ._base import ChioIntegration
from ._declare import PUBLIC, ToolDeclaration

__all__ = ["PUBLIC", "Chio", "ChioContext", "ToolDeclaration", "context_of"]


def context_of(request: HTTPConnection) -> ChioContext:
    """The verified caller of ``request`` (set by the middleware before the handler runs)."""
    found = getattr(request.state, "chio", None)
    if not isinstance(found, ChioContext):
        raise RuntimeError("no ChioContext on this request: is the Chio middleware installed?")
    return found


class Chio(ChioIntegration):
    """The Chio integration of one Starlette (or FastAPI) app.

    Building it checks every setting and opens the store and the sink, so a bad
    configuration fails at import, before a server accepts anything.
    """

    context = staticmethod(context_of)

    def _prepare(self) -> None:
        self._failure: str | None = None
        try:
            self._runtime: ChioRuntime | None = ChioRuntime(self._settings, **self._options)
        except Exception as exc:
            if not restarts_workers_that_fail_to_import():
                raise
            # uvicorn --workers N restarts a worker that dies at import, forever; a worker
            # whose lifespan start-up fails stops it: fail there (init_app), naming the
            # setting, instead of here.
            self._runtime = None
            self._failure = f"chio_middleware configuration is invalid: {exc}"
        self.settings = self._settings if self._runtime is None else self._runtime.settings

    @property
    def runtime(self) -> ChioRuntime:
        """The engine, store and sink of this app's middleware."""
        if self._runtime is None:
            raise ChioStartupError(str(self._failure))
        return self._runtime

    def init_app(self, app: Any) -> None:
        """Install the middleware on ``app`` (``app.add_middleware``)."""
        if self._runtime is None:  # built when Starlette builds its stack: fails the lifespan
            app.add_middleware(
                ChioMiddleware,
                settings=self._settings,
                **self._options,
                render_denial=self.render_denial,
            )
            return
        app.add_middleware(ChioMiddleware, runtime=self._runtime, render_denial=self.render_denial)
