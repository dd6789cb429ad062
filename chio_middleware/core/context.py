"""What the application learns about a verified call: :class:`ChioContext`.

Adapters put it where each framework's handlers look (``request.state.chio``,
``environ["chio"]``, Flask's ``g.chio``, a FastAPI dependency), so a handler can name the
caller and the tool it was authorised for without re-reading any header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .models import ToolGrant

__all__ = ["ChioContext"]


@dataclass(frozen=True, slots=True)
class ChioContext:
    """The verified caller of one request, as the middleware checked it.

    ``capability_id``, ``subject``, ``grant`` and ``tool`` are ``None`` when no capability
    was presented (a public or safe unbound route). ``receipt_id`` is the id of the receipt
    this request's response will carry; ``arguments`` the arguments the constraints and
    guards saw (PROTOCOL.md 5.2).
    """

    request_id: str
    receipt_id: str
    capability_id: str | None = None
    subject: str | None = None
    grant: ToolGrant | None = None
    tool: tuple[str, str] | None = None
    route_pattern: str | None = None
    arguments: dict[str, Any] | None = None
