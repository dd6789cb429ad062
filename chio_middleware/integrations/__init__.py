"""Framework-native integrations, one floor above the generic ASGI/WSGI adapters.

``chio_middleware.integrations.starlette`` (Starlette and FastAPI) and
``chio_middleware.integrations.flask`` let a route declare its tool where the route is
declared (``@chio.tool("srv-notes", "write_note")``, ``@chio.public``) and make the
framework's own router decide which route a request is (PROTOCOL.md 5.1). The declarations
themselves (:mod:`._declare`) import no framework.
"""

from __future__ import annotations

from ._declare import PUBLIC, ToolDeclaration, declaration_of, public, tool

__all__ = ["PUBLIC", "ToolDeclaration", "declaration_of", "public", "tool"]
