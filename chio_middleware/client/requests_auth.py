"""requests auth on top of :class:`ChioCredentials`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from .credentials import (
    CAPABILITY_HEADER,
    CHIO_REQUEST_HEADERS,
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
            # Hooks run on every response, redirects included, before requests copies the
            # request to follow one: drop our headers there when the target is elsewhere.
            _strip_on_cross_origin_redirect(response)
            self._check(response)
            connection = getattr(response, "connection", None)
            nonce = _challenge_nonce(response.status_code, _values(response, NONCE_HEADER))
            carries = CAPABILITY_HEADER in response.request.headers
            if not signed or not carries or retried or nonce is None or connection is None:
                return response  # never a proof for a request that is not signed for here
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
        if CAPABILITY_HEADER not in request.headers:
            return  # not signed for this origin (a redirect elsewhere): no receipt is due
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


def _strip_on_cross_origin_redirect(response: requests.Response) -> None:
    """Remove the Chio headers from a request that is redirected to another origin.

    The decision is requests' own for ``Authorization`` (``Session.should_strip_auth``:
    another host, scheme or port, save http to https on the default ports); the target is
    resolved against the response URL as ``Session.resolve_redirects`` does.
    """
    if not response.is_redirect:
        return
    from requests.sessions import SessionRedirectMixin

    rules = SessionRedirectMixin()
    should_strip: Callable[[str, str], bool] = rules.should_strip_auth  # untyped in the stub
    location = rules.get_redirect_target(response)
    request = response.request
    if location is None or request.url is None:
        return
    try:
        target = urljoin(response.url or request.url, location)
        elsewhere = should_strip(request.url, target)
    except ValueError:  # a Location requests cannot parse: keep nothing of ours
        elsewhere = True
    if elsewhere:
        for name in CHIO_REQUEST_HEADERS:
            request.headers.pop(name, None)
