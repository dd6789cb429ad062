"""The signer shared by every client adapter: headers for a request, checks on a response."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from ..core.capability import parse_capability
from ..core.clock import Clock, system_clock
from ..core.crypto import KeyFormatError, PublicKey, SigningKey
from ..core.dpop import DpopBinding, create_dpop_proof
from ..core.encoding import decode_header_object, encode_header_object
from ..core.errors import ChioError
from ..core.hashing import body_hash, content_hash, request_binding_hash
from ..core.models import CapabilityToken, HttpReceipt
from ..core.nonce import parse_execution_nonce
from ..core.receipts import ReceiptInvalid, decode_receipt_header, verify_receipt
from ..core.request import decode_path, parse_query

CAPABILITY_HEADER = "X-Chio-Capability"
DPOP_HEADER = "X-Chio-DPoP"
NONCE_HEADER = "X-Chio-Execution-Nonce"
RECEIPT_HEADER = "X-Chio-Receipt"
RECEIPT_ID_HEADER = "X-Chio-Receipt-Id"
#: The request headers that carry credentials: never sent to another origin on a redirect.
CHIO_REQUEST_HEADERS = (CAPABILITY_HEADER, DPOP_HEADER, NONCE_HEADER)

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
