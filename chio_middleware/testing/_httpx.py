"""The test-client auth: :class:`ChioAuth`, tolerant of responses that carry no receipt.

Starlette's ``TestClient`` is an ``httpx.Client`` (or, where installed, an ``httpx2``
client): :func:`auth_for` builds the auth class on the ``Auth`` base of the library the
test client uses, so the client accepts it.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any

from ..client.credentials import RECEIPT_HEADER, ChioCredentials
from ..client.httpx_auth import ChioAuth

if TYPE_CHECKING:
    import httpx

__all__ = ["ChioTestAuth", "auth_class_for"]


class ChioTestAuth(ChioAuth):
    """:class:`ChioAuth` for tests: a response without a receipt is not an error.

    A receipt that is present must still verify against the kit's kernel key and describe
    the request sent; it is then ``response.extensions["chio_receipt"]``.
    """

    def __init__(self, credentials: ChioCredentials) -> None:
        if not self._available:
            raise ImportError("ChioTestAuth needs httpx: pip install 'chio-middleware[httpx]'")
        self.credentials = credentials

    def _check(self, response: httpx.Response, target: str, body: bytes) -> None:
        if response.headers.get(RECEIPT_HEADER) is None:
            return
        super()._check(response, target, body)


_CLASSES: dict[int, type[ChioTestAuth]] = {}


def auth_class_for(module: types.ModuleType | None) -> type[ChioTestAuth]:
    """:class:`ChioTestAuth`, or a subclass also based on ``module.Auth`` (``httpx2``)."""
    base: Any = getattr(module, "Auth", None)
    if base is None or issubclass(ChioTestAuth, base):
        return ChioTestAuth
    found = _CLASSES.get(id(base))
    if found is None:
        found = type("ChioTestAuth", (ChioTestAuth, base), {"_available": True})
        _CLASSES[id(base)] = found
    return found
