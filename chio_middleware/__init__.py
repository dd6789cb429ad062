"""chio_middleware: Chio capability, DPoP and execution-nonce verification for web apps.

Public API::

    from chio_middleware import ChioSettings, RouteBinding
    from chio_middleware.asgi import ChioMiddleware       # Starlette / FastAPI
    from chio_middleware.wsgi import ChioWSGIMiddleware   # Flask / any WSGI app

Names are imported lazily so that ``import chio_middleware.core`` stays free of anything
but the standard library, pydantic and PyNaCl.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core.guards import Guard, GuardContext
    from .core.routing import RouteBinding
    from .settings import ChioSettings

__all__ = ["ChioSettings", "Guard", "GuardContext", "RouteBinding"]
__version__ = "0.1.0"

_LAZY = {
    "ChioSettings": ("chio_middleware.settings", "ChioSettings"),
    "RouteBinding": ("chio_middleware.core.routing", "RouteBinding"),
    "Guard": ("chio_middleware.core.guards", "Guard"),
    "GuardContext": ("chio_middleware.core.guards", "GuardContext"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'chio_middleware' has no attribute {name!r}")
