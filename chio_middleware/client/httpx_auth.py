"""httpx auth (sync and async clients) on top of :class:`ChioCredentials`."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from .credentials import (
    NONCE_HEADER,
    ReceiptVerificationError,
    RequestSigningError,
    _challenge_nonce,
    _CredentialsAuth,
)

if TYPE_CHECKING:
    import httpx
    from httpx import Auth as _HttpxAuthBase

    _HAS_HTTPX = True
else:
    try:
        from httpx import Auth as _HttpxAuthBase
    except ImportError:  # the httpx extra is not installed
        _HttpxAuthBase, _HAS_HTTPX = object, False
    else:
        _HAS_HTTPX = True


class ChioAuth(_CredentialsAuth, _HttpxAuthBase):
    """httpx auth for sync and async clients: capability, DPoP, one 428 retry, receipts.

    A verified receipt is put in ``response.extensions["chio_receipt"]``.
    """

    _extra = "httpx"
    _available = _HAS_HTTPX
    requires_request_body = True

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Sign, send, answer one execution-nonce challenge, verify the receipt."""
        try:
            target = request.url.raw_path.decode("ascii")
        except UnicodeDecodeError:
            raise RequestSigningError("request target is not ASCII") from None
        body = request.content
        headers = self.credentials.sign(request.method, target, body)
        request.headers.update(headers)
        response = yield request
        self._check(response, target, body)
        nonce = _challenge_nonce(response.status_code, response.headers.get_list(NONCE_HEADER))
        if headers and nonce is not None:
            request.headers.update(
                self.credentials.sign(request.method, target, body, execution_nonce=nonce)
            )
            response = yield request
            self._check(response, target, body)

    def _check(self, response: httpx.Response, target: str, body: bytes) -> None:
        try:
            receipt = self.credentials.check_response(
                response.headers, method=response.request.method, target=target, body=body
            )
        except ReceiptVerificationError as exc:
            raise ReceiptVerificationError(str(exc), response=response) from None
        if receipt is not None:
            response.extensions["chio_receipt"] = receipt
