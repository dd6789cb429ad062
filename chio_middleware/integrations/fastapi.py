"""Chio for FastAPI apps: the Starlette integration plus a dependency and OpenAPI.

::

    from fastapi import Depends, FastAPI
    from chio_middleware.integrations.fastapi import Caller, Chio

    app = FastAPI()
    chio = Chio(app, settings=ChioSettings(...))

    @app.post("/notes")
    @chio.tool("srv-notes", "write_note")
    async def write_note(note: Note, caller: Caller): ...       # Caller = the ChioContext

    router = APIRouter(dependencies=[Depends(chio.tool("srv-admin", "admin"))])  # a whole router

``/docs`` then shows the Chio headers as security schemes and each bound route's tool
(``x-chio-tool``), so an agent's author sees what to send.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends

from ._declare import PUBLIC, Public, ToolDeclaration
from .starlette import Chio as StarletteChio
from .starlette import ChioContext, context_of
from .starlette_routing import endpoint_declaration

__all__ = [
    "PUBLIC",
    "SECURITY_SCHEMES",
    "Caller",
    "Chio",
    "ChioContext",
    "context_of",
    "document",
]

#: A handler parameter annotated ``Caller`` receives the request's :class:`ChioContext`.
Caller = Annotated[ChioContext, Depends(context_of)]

#: The Chio request headers as OpenAPI security schemes.
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "ChioCapability": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Chio-Capability",
        "description": "A Chio capability token (JSON or base64url JSON) granting the tool.",
    },
    "ChioDPoP": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Chio-DPoP",
        "description": "A DPoP proof by the capability's subject key, bound to this request.",
    },
    "ChioExecutionNonce": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Chio-Execution-Nonce",
        "description": "A single-use execution nonce (428 challenge) where the tool needs one.",
    },
}
_METHODS = ("get", "put", "post", "delete", "patch", "options", "head")


class Chio(StarletteChio):
    """The Chio integration of one FastAPI app (middleware, declarations, OpenAPI)."""

    def init_app(self, app: Any) -> None:
        """Install the middleware and document the Chio headers in ``app.openapi()``."""
        super().init_app(app)
        original = app.openapi

        def openapi() -> dict[str, Any]:
            if app.openapi_schema is None:
                app.openapi_schema = document(original(), app.routes)
            schema: dict[str, Any] = app.openapi_schema
            return schema

        app.openapi = openapi


def document(schema: dict[str, Any], routes: list[Any]) -> dict[str, Any]:
    """Add the Chio security schemes and each declared route's ``x-chio-tool``."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    paths = schema.get("paths", {})
    for route in routes:
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
        operations = paths.get(path, {}) if path else {}
        for method, operation in operations.items():
            if method not in _METHODS:
                continue
            declared = endpoint_declaration(route, method.upper())
            if isinstance(declared, ToolDeclaration):
                operation["x-chio-tool"] = {
                    "tool_server": declared.tool_server,
                    "tool_name": declared.tool_name,
                    "require_dpop": declared.require_dpop,
                    "require_nonce": declared.require_nonce,
                }
                requirement: dict[str, list[str]] = {"ChioCapability": []}
                if declared.require_dpop or declared.require_nonce:
                    requirement["ChioDPoP"] = []
                if declared.require_nonce:
                    requirement["ChioExecutionNonce"] = []
                operation["security"] = [requirement]
            elif isinstance(declared, Public):
                operation["security"] = []
    return schema
