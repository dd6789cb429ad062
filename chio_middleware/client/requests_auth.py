"""requests auth on top of :class:`ChioCredentials`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .credentials import (
    NONCE_HEADER,
    ReceiptVerificationError,
    RequestSigningError,
    _challenge_nonce,
    _CredentialsAuth,
)

if TYPE_CHECKING:
    import requests
    from requests.auth import AuthBase as _RequestsAuthBase

    _HAS_REQUESTS = True
else:
    try:
        from requests.auth import AuthBase as _RequestsAuthBase
    except ImportError:  # the requests extra is not installed
        _RequestsAuthBase, _HAS_REQUESTS = object, False
    else:
        _HAS_REQUESTS = True


def _requests_body(request: requests.PreparedRequest) -> bytes:
    """The body bytes of a prepared request; a str or streamed body is replaced by them."""
    body: object = request.body
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        data = body.encode("utf-8")  # what urllib3 2 sends for a str body
    elif callable(read := getattr(body, "read", None)):
        chunk = read()
        data = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
    elif isinstance(body, bytearray | memoryview):
        data = bytes(body)
    elif isinstance(body, Iterable):
        data = b"".join(c.encode("utf-8") if isinstance(c, str) else bytes(c) for c in body)
    else:
        raise RequestSigningError(f"cannot read a request body of type {type(body).__name__}")
    # DPoP binds the whole body, so a stream is read once and sent as these bytes.
    request.body = data
    request.headers.pop("Transfer-Encoding", None)
    request.headers["Content-Length"] = str(len(data))
    return data


class ChioRequestsAuth(_CredentialsAuth, _RequestsAuthBase):
    """requests auth: capability, DPoP, one 428 retry (response hook), receipts.

    A verified receipt is set as ``response.chio_receipt``.
    """

    _extra = "requests"
    _available = _HAS_REQUESTS

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        """Add the Chio headers to ``r`` and the hook that answers a 428 challenge."""
        body = _requests_body(r)
        headers = self.credentials.sign(r.method or "GET", r.path_url, body)
        r.headers.update(headers)
        r.hooks["response"].append(self._response_hook(signed=bool(headers)))
        return r

    def _response_hook(self, *, signed: bool) -> Callable[..., requests.Response]:
        retried = False  # one retry per request, even when requests copies the hook

        def on_response(response: requests.Response, **kwargs: Any) -> requests.Response:
            nonlocal retried
            self._check(response)
            connection = getattr(response, "connection", None)
            nonce = _challenge_nonce(response.status_code, _values(response, NONCE_HEADER))
            if not signed or retried or nonce is None or connection is None:
                return response
            retried = True
            from requests import cookies

            # As HTTPDigestAuth does: cookies the challenge set go out with the retry.
            extract_cookies: Callable[..., None] = cookies.extract_cookies_to_jar  # untyped stub
            response.content  # noqa: B018  (drain, so the connection can be reused)
            response.close()
            prepared = response.request.copy()
            jar = getattr(prepared, "_cookies", None)
            if jar is not None:
                extract_cookies(jar, response.request, response.raw)
                prepared.prepare_cookies(jar)
            body = _requests_body(prepared)
            prepared.headers.update(
                self.credentials.sign(
                    prepared.method or "GET", prepared.path_url, body, execution_nonce=nonce
                )
            )
            retry: requests.Response = connection.send(prepared, **kwargs)
            retry.history.append(response)
            retry.request = prepared
            self._check(retry)
            return retry

        return on_response

    def _check(self, response: requests.Response) -> None:
        request = response.request
        try:
            receipt = self.credentials.check_response(
                response.headers,
                method=request.method or "GET",
                target=request.path_url,
                body=_requests_body(request),
            )
        except ReceiptVerificationError as exc:
            raise ReceiptVerificationError(str(exc), response=response) from None
        if receipt is not None:
            response.chio_receipt = receipt  # type: ignore[attr-defined]


def _values(response: requests.Response, name: str) -> list[str]:
    value = response.headers.get(name)
    return [] if value is None else [value]
