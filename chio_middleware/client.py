"""The agent side of Chio over HTTP: sign requests, answer the nonce challenge, check receipts.

With httpx (the same auth object serves ``httpx.Client`` and ``httpx.AsyncClient``)::

    auth = ChioAuth(capability=token_json, agent_key=seed_hex, kernel_key=kernel_hex)
    response = httpx.post("https://tools.example/chio/tools/notes/write", json=..., auth=auth)
    receipt = response.extensions["chio_receipt"]

With requests: ``requests.post(url, json=..., auth=ChioRequestsAuth(...))``; the verified
receipt is then ``response.chio_receipt``. :func:`verified_receipt` reads either, typed.

Every request gets ``X-Chio-Capability`` and a fresh ``X-Chio-DPoP`` proof bound to the
request binding hash of the bytes actually sent (PROTOCOL.md 3, 6). A 428 answer carrying an
``X-Chio-Execution-Nonce`` is repeated once with that nonce and a new proof (PROTOCOL.md 4);
a second 428 goes back to the caller. With ``kernel_key`` set, every response must carry a
receipt signed by one of those keys, named by ``X-Chio-Receipt-Id`` and made for this very
request (its ``content_hash``, PROTOCOL.md 6, 7). Redirects are not re-signed.

The tool a request invokes is ``tool_server``/``tool_name`` when given, else what
``resolver(method, decoded_path)`` returns (``None``: send that request without Chio
headers), else the segments of the reserved path ``/chio/tools/{server}/{tool}``.

Errors::

    ChioClientError
    ├── RequestSigningError        the request cannot be signed (no tool, bad path or query)
    └── ReceiptVerificationError   a response receipt is missing, invalid or for another request

Bad constructor arguments (keys, capability, options) raise ``ValueError``. httpx and
requests are optional extras: this module imports without them, and each auth class needs
its library only when constructed. The agent key is never logged, printed or repr'd.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes, urlsplit

from .core.capability import parse_capability
from .core.clock import Clock, system_clock
from .core.crypto import KeyFormatError, PublicKey, SigningKey
from .core.dpop import DpopBinding, create_dpop_proof
from .core.encoding import decode_header_object, encode_header_object
from .core.errors import ChioError
from .core.hashing import body_hash, content_hash, request_binding_hash
from .core.models import CapabilityToken, HttpReceipt
from .core.nonce import parse_execution_nonce
from .core.receipts import ReceiptInvalid, decode_receipt_header, verify_receipt
from .core.request import decode_path, parse_query

if TYPE_CHECKING:
    import httpx
    import requests
    from httpx import Auth as _HttpxAuthBase
    from requests.auth import AuthBase as _RequestsAuthBase

    _HAS_HTTPX = _HAS_REQUESTS = True
else:
    try:
        from httpx import Auth as _HttpxAuthBase
    except ImportError:  # the httpx extra is not installed
        _HttpxAuthBase, _HAS_HTTPX = object, False
    else:
        _HAS_HTTPX = True
    try:
        from requests.auth import AuthBase as _RequestsAuthBase
    except ImportError:  # the requests extra is not installed
        _RequestsAuthBase, _HAS_REQUESTS = object, False
    else:
        _HAS_REQUESTS = True

__all__ = [
    "CAPABILITY_HEADER",
    "DPOP_HEADER",
    "NONCE_HEADER",
    "RECEIPT_HEADER",
    "RECEIPT_ID_HEADER",
    "ChioAuth",
    "ChioClientError",
    "ChioCredentials",
    "ChioRequestsAuth",
    "KernelKeys",
    "ReceiptVerificationError",
    "RequestSigningError",
    "ToolResolver",
    "verified_receipt",
    "verify_response_receipt",
]

CAPABILITY_HEADER = "X-Chio-Capability"
DPOP_HEADER = "X-Chio-DPoP"
NONCE_HEADER = "X-Chio-Execution-Nonce"
RECEIPT_HEADER = "X-Chio-Receipt"
RECEIPT_ID_HEADER = "X-Chio-Receipt-Id"

#: ``(method, decoded path) -> (tool_server, tool_name)``, or ``None`` to leave it unsigned.
ToolResolver = Callable[[str, str], tuple[str, str] | None]
#: One trusted kernel key (hex or :class:`PublicKey`) or several.
KernelKeys = PublicKey | str | Iterable[PublicKey | str]


class ChioClientError(Exception):
    """Base of the errors the agent client raises while sending a request."""


class RequestSigningError(ChioClientError):
    """The request cannot be signed: no tool for it, or a path or query Chio cannot bind."""


class ReceiptVerificationError(ChioClientError):
    """A response receipt is missing, does not verify, or was not made for this request."""

    def __init__(self, message: str, *, response: object | None = None) -> None:
        super().__init__(message)
        #: The response whose receipt failed (requests: open; httpx: already closed).
        self.response = response


def _load_capability(value: CapabilityToken | Mapping[str, Any] | str | bytes) -> CapabilityToken:
    try:
        if isinstance(value, str | bytes):
            # JSON text, or the base64url header form (PROTOCOL.md 1.3); no size bound here.
            text = value.strip()
            value = decode_header_object(text, name="capability", max_bytes=len(text))
        return parse_capability(dict(value) if isinstance(value, Mapping) else value)
    except ChioError as exc:
        raise ValueError(f"capability: {exc}") from None


def _load_kernel_keys(value: KernelKeys) -> tuple[PublicKey, ...]:
    items = [value] if isinstance(value, PublicKey | str) else list(value)
    keys = tuple(
        item if isinstance(item, PublicKey) else PublicKey.from_hex(item) for item in items
    )
    if not keys:
        raise ValueError("kernel_key: at least one trusted kernel key is needed")
    return keys


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    return next((item for key, item in headers.items() if key.lower() == lowered), None)


def _split(target: str) -> tuple[str, str, dict[str, str]]:
    """The raw path, decoded path and decoded query of a request target or URL."""
    if target.startswith("/"):
        # Origin form: core.request.split_target (urlsplit) would read "//x" as a host.
        raw_path, _, raw_query = target.partition("#")[0].partition("?")
    else:
        parts = urlsplit(target)
        raw_path, raw_query = parts.path or "/", parts.query
    try:
        return raw_path, decode_path(raw_path), parse_query(raw_query)
    except ChioError as exc:
        raise RequestSigningError(f"cannot bind request target: {exc}") from None


def _reserved_tool(raw_path: str) -> tuple[str, str] | None:
    """The ``(server, tool)`` of ``/chio/tools/{server}/{tool}`` (PROTOCOL.md 5), if it is one."""
    segments = raw_path.split("/")
    if len(segments) != 5 or segments[0]:
        return None
    try:
        decoded = [unquote_to_bytes(segment).decode("utf-8") for segment in segments[1:]]
    except UnicodeDecodeError:
        raise RequestSigningError("reserved tool path is not valid UTF-8") from None
    if decoded[:2] != ["chio", "tools"]:
        return None
    server, tool = decoded[2:]
    if not server or not tool or "/" in server or "/" in tool:
        raise RequestSigningError("reserved tool path has an empty segment or a '/' inside one")
    return server, tool


def _challenge_nonce(status: int, values: Sequence[str]) -> str | None:
    """The nonce of a 428 challenge (PROTOCOL.md 4), or ``None`` when it is not one."""
    if status != 428 or len(values) != 1:
        return None
    try:
        parse_execution_nonce(decode_header_object(values[0], name=NONCE_HEADER))
    except ChioError:
        return None
    return values[0]


def verify_response_receipt(
    headers: Mapping[str, str],
    kernel_keys: KernelKeys,
    *,
    method: str | None = None,
    target: str | None = None,
    body: bytes = b"",
) -> HttpReceipt:
    """Verify a response's ``X-Chio-Receipt`` against trusted kernel keys; return the receipt.

    ``headers`` is any mapping of response headers (names matched case-insensitively). The
    receipt must decode, be signed by one of ``kernel_keys`` and have the id named by
    ``X-Chio-Receipt-Id``. With ``method`` and ``target`` (the path and query sent, or the
    URL) and ``body``, its ``content_hash`` must also be that request's. Raises
    :class:`ReceiptVerificationError`; bad ``kernel_keys`` raise ``ValueError``.
    """
    trusted = _load_kernel_keys(kernel_keys)
    if (method is None) != (target is None):
        raise ValueError("method and target go together")
    value = _header(headers, RECEIPT_HEADER)
    if value is None:
        raise ReceiptVerificationError(f"response has no {RECEIPT_HEADER} header")
    try:
        receipt = verify_receipt(decode_receipt_header(value), trusted_keys=trusted)
    except ReceiptInvalid as exc:
        raise ReceiptVerificationError(f"{RECEIPT_HEADER}: {exc}") from None
    receipt_id = _header(headers, RECEIPT_ID_HEADER)
    if receipt_id is None or receipt_id.strip() != receipt.id:
        raise ReceiptVerificationError(f"{RECEIPT_ID_HEADER} does not name the receipt sent")
    if method is not None and target is not None:
        _, path, query = _split(target)
        expected = content_hash(method, path, query, body_hash(body), receipt.route_pattern)
        if receipt.content_hash != expected:
            raise ReceiptVerificationError("receipt was made for another request")
    return receipt


def verified_receipt(response: object) -> HttpReceipt | None:
    """The receipt an auth class verified for an httpx or requests response, else ``None``."""
    extensions = getattr(response, "extensions", None)
    if isinstance(extensions, Mapping):
        found = extensions.get("chio_receipt")
    else:
        found = getattr(response, "chio_receipt", None)
    return found if isinstance(found, HttpReceipt) else None


class ChioCredentials:
    """The capability, agent key, tool choice and receipt trust that both auth classes share."""

    def __init__(
        self,
        *,
        capability: CapabilityToken | Mapping[str, Any] | str | bytes,
        agent_key: SigningKey | str,
        tool_server: str | None = None,
        tool_name: str | None = None,
        resolver: ToolResolver | None = None,
        kernel_key: KernelKeys | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self.capability = _load_capability(capability)
        self._agent_key = (
            agent_key if isinstance(agent_key, SigningKey) else SigningKey.from_seed_hex(agent_key)
        )
        try:
            subject = PublicKey.from_hex(self.capability.subject)
        except KeyFormatError as exc:
            raise ValueError(f"capability subject: {exc}") from None
        if subject != self._agent_key.public_key:
            raise ValueError("agent_key is not the capability's subject key")
        if (tool_server is None) != (tool_name is None):
            raise ValueError("give tool_server and tool_name together")
        if resolver is not None and tool_server is not None:
            raise ValueError("give either a fixed tool_server/tool_name or a resolver, not both")
        self._fixed_tool = None if tool_server is None else (tool_server, str(tool_name))
        self._resolver = resolver
        #: The trusted kernel keys, or ``None`` when receipts are not checked.
        self.kernel_keys = None if kernel_key is None else _load_kernel_keys(kernel_key)
        self._clock = clock
        self._capability_header = encode_header_object(self.capability.to_wire())

    def __repr__(self) -> str:
        return (
            f"ChioCredentials(capability_id={self.capability.id!r}, "
            f"agent={self._agent_key.public_key.hex!r})"
        )

    def _tool(self, method: str, raw_path: str, path: str) -> tuple[str, str] | None:
        if self._fixed_tool is not None:
            return self._fixed_tool
        if self._resolver is not None:
            return self._resolver(method.upper(), path)
        tool = _reserved_tool(raw_path)
        if tool is None:
            raise RequestSigningError(
                f"no tool for {raw_path!r}: give tool_server/tool_name or a resolver, "
                "or call /chio/tools/{server}/{tool}"
            )
        return tool

    def sign(
        self, method: str, target: str, body: bytes, *, execution_nonce: str | None = None
    ) -> dict[str, str]:
        """The Chio headers for a request (``{}`` when the resolver leaves it unsigned).

        ``target`` is the path and query exactly as sent (or the full URL); ``body`` the raw
        body bytes. Every call makes a new proof with a new random nonce.
        """
        raw_path, path, query = _split(target)
        tool = self._tool(method, raw_path, path)
        if tool is None:
            return {}
        binding = DpopBinding(
            capability_id=self.capability.id,
            tool_server=tool[0],
            tool_name=tool[1],
            action_hash=request_binding_hash(method, path, query, body_hash(body)),
        )
        proof = create_dpop_proof(self._agent_key, binding=binding, issued_at=int(self._clock()))
        headers = {
            CAPABILITY_HEADER: self._capability_header,
            DPOP_HEADER: encode_header_object(proof.to_wire()),
        }
        if execution_nonce is not None:
            headers[NONCE_HEADER] = execution_nonce
        return headers

    def check_response(
        self, headers: Mapping[str, str], *, method: str, target: str, body: bytes
    ) -> HttpReceipt | None:
        """Verify the response receipt when kernel keys are set (else ``None``)."""
        if self.kernel_keys is None:
            return None
        return verify_response_receipt(
            headers, self.kernel_keys, method=method, target=target, body=body
        )


class _CredentialsAuth:
    """Construction shared by the two auth classes."""

    _extra = ""
    _available = True

    def __init__(
        self,
        *,
        capability: CapabilityToken | Mapping[str, Any] | str | bytes,
        agent_key: SigningKey | str,
        tool_server: str | None = None,
        tool_name: str | None = None,
        resolver: ToolResolver | None = None,
        kernel_key: KernelKeys | None = None,
        clock: Clock = system_clock,
    ) -> None:
        if not self._available:
            raise ImportError(
                f"{type(self).__name__} needs {self._extra}: "
                f"pip install 'chio-middleware[{self._extra}]'"
            )
        #: The shared signer; its ``sign`` and ``check_response`` serve other HTTP clients too.
        self.credentials = ChioCredentials(
            capability=capability,
            agent_key=agent_key,
            tool_server=tool_server,
            tool_name=tool_name,
            resolver=resolver,
            kernel_key=kernel_key,
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(capability_id={self.credentials.capability.id!r})"


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
