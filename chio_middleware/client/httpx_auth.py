"""httpx auth (sync and async clients) on top of :class:`ChioCredentials`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING

from .credentials import (
    CHIO_REQUEST_HEADERS,
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


#: The request extension naming the origin a request's Chio headers were made for. httpx
#: passes a request's extensions on to the redirect requests it builds from it.
ORIGIN_EXTENSION = "chio_signed_origin"

Origin = tuple[str, str, int | None]


def _origin(url: httpx.URL) -> Origin:
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def keeps_credentials(signed_for: Origin, url: httpx.URL) -> bool:
    """Whether a request to ``url`` may carry Chio headers made for ``signed_for``.

    httpx's rule for ``Authorization`` (``_same_origin`` and ``_is_https_redirect`` in
    ``httpx/_client.py``): same scheme, host and port (default ports filled in), or the
    upgrade of ``http`` on port 80 to ``https`` on port 443 of the same host.
    """
    target = _origin(url)
    if target == signed_for:
        return True
    scheme, host, port = signed_for
    return (scheme, port, target[0], target[2]) == ("http", 80, "https", 443) and (
        host == target[1]
    )


def _strip(headers: httpx.Headers) -> bool:
    """Remove the Chio headers; True when there were any."""
    found = False
    for name in CHIO_REQUEST_HEADERS:
        found = headers.pop(name, None) is not None or found
    return found


def _crossed(request: httpx.Request) -> bool:
    """True for a request made from one signed for another origin (a redirect)."""
    signed_for = request.extensions.get(ORIGIN_EXTENSION)
    return signed_for is not None and not keeps_credentials(signed_for, request.url)


class ChioAuth(_CredentialsAuth, _HttpxAuthBase):
    """httpx auth for sync and async clients: capability, DPoP, one 428 retry, receipts.

    A verified receipt is put in ``response.extensions["chio_receipt"]``.

    Redirects: the Chio headers never go to another origin (decided as httpx decides for
    ``Authorization``) and no proof is ever made for one. A redirect request sent through
    the client (httpx's default ``follow_redirects=False``, then ``response.next_request``)
    reaches this auth: to the same origin it is signed afresh, to another it goes without
    Chio headers. Redirects that the client follows itself (``follow_redirects=True``) do
    not pass through an auth, so such a client needs the hook that strips the headers:
    ``httpx.Client(auth=auth, event_hooks=auth.event_hooks, follow_redirects=True)``
    (``auth.async_event_hooks`` for ``httpx.AsyncClient``). Without it, a redirect that took
    the headers to another origin raises :class:`RequestSigningError`.
    """

    _extra = "httpx"
    _available = _HAS_HTTPX
    requires_request_body = True

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Sign, send, answer one execution-nonce challenge, verify the receipt."""
        if _crossed(request):
            _strip(request.headers)  # a redirect to another origin: nothing of ours goes
            yield request
            return
        try:
            target = request.url.raw_path.decode("ascii")
        except UnicodeDecodeError:
            raise RequestSigningError("request target is not ASCII") from None
        body = request.content
        headers = self.credentials.sign(request.method, target, body)
        request.headers.update(headers)
        if headers:
            request.extensions[ORIGIN_EXTENSION] = _origin(request.url)
        response = yield request
        self._after_redirects(response)
        self._check(response, target, body)
        nonce = _challenge_nonce(response.status_code, response.headers.get_list(NONCE_HEADER))
        if headers and nonce is not None and not response.history:
            request.headers.update(
                self.credentials.sign(request.method, target, body, execution_nonce=nonce)
            )
            response = yield request
            self._after_redirects(response)
            self._check(response, target, body)

    @property
    def event_hooks(self) -> dict[str, list[Callable[[httpx.Request], None]]]:
        """Event hooks for an ``httpx.Client`` that follows redirects itself."""
        return {"request": [strip_cross_origin]}

    @property
    def async_event_hooks(self) -> dict[str, list[Callable[[httpx.Request], Awaitable[None]]]]:
        """Event hooks for an ``httpx.AsyncClient`` that follows redirects itself."""
        return {"request": [async_strip_cross_origin]}

    @staticmethod
    def _after_redirects(response: httpx.Response) -> None:
        """Fail loudly when the client followed a redirect with our headers to elsewhere."""
        for hop in [*response.history[1:], response]:
            sent = hop.request
            if _crossed(sent) and any(name in sent.headers for name in CHIO_REQUEST_HEADERS):
                raise RequestSigningError(
                    f"the client followed a redirect to {sent.url.host}:{sent.url.port} with "
                    "the Chio headers of another origin; give the client "
                    "event_hooks=auth.event_hooks (async_event_hooks for AsyncClient)"
                )

    def _check(self, response: httpx.Response, target: str, body: bytes) -> None:
        if response.history:
            sent = response.request  # a redirect was followed: that request made the answer
            if not any(name in sent.headers for name in CHIO_REQUEST_HEADERS):
                return  # not signed for that origin, so no receipt of ours is due
            target, body = sent.url.raw_path.decode("ascii"), sent.content
        try:
            receipt = self.credentials.check_response(
                response.headers, method=response.request.method, target=target, body=body
            )
        except ReceiptVerificationError as exc:
            raise ReceiptVerificationError(str(exc), response=response) from None
        if receipt is not None:
            response.extensions["chio_receipt"] = receipt


def strip_cross_origin(request: httpx.Request) -> None:
    """httpx request hook: drop Chio headers from a redirect to another origin."""
    if _crossed(request):
        _strip(request.headers)


async def async_strip_cross_origin(request: httpx.Request) -> None:
    """The same hook for ``httpx.AsyncClient``."""
    strip_cross_origin(request)
