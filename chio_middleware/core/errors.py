"""The exception hierarchy of chio_middleware (PROTOCOL.md section 8).

Every failure a request can meet is a :class:`ChioError`; each concrete class carries the
stable snake_case ``code`` and the HTTP ``status`` of PROTOCOL.md 8 as class attributes, so
an adapter renders any of them with :meth:`ChioError.to_body` and no lookup table::

    ChioError
    ├── BadRequest                 chio_bad_request          400
    │   └── MalformedHeader
    ├── CapabilityRequired         chio_capability_required  401
    ├── CapabilityInvalid          chio_capability_invalid   401  (.reason)
    ├── DpopRequired               chio_dpop_required        401
    ├── DpopInvalid                chio_dpop_invalid         401  (.step)
    ├── ReplayDetected             chio_replay_detected      401
    ├── StateForgotten             chio_state_forgotten      401
    ├── NonceInvalid               chio_nonce_invalid        401  (.step)
    ├── AccessDenied               chio_access_denied        403
    ├── PayloadTooLarge            chio_payload_too_large    413
    ├── HeadersTooLarge            chio_headers_too_large    431
    ├── NonceRequired              chio_nonce_required       428
    ├── RateLimited                chio_rate_limited         429  (.retry_after)
    │   └── ReservationQuotaExceeded
    ├── FederationInvalid          chio_federation_invalid   401  (.step)
    ├── FederationUntrusted        chio_federation_untrusted 403  (.step)
    └── Unavailable                chio_unavailable          503
        └── StoreFull

Errors that are not about a request (bad configuration, bad key material, values that
cannot be canonicalised) are plain ``ValueError`` subclasses defined next to the code that
raises them; the verifiers convert them into the classes above at the boundary.

Attacker-supplied text is bounded wherever it is echoed (error bodies, receipt verdict
reasons and evidence, log lines): :func:`echo` quotes one value in at most
:data:`MAX_ECHO_CHARS` characters, and every :class:`ChioError` message is cut to
:data:`MAX_MESSAGE_CHARS` characters (:func:`bounded`) and made valid Unicode, so no input
can make a response header or a log line larger than a fixed size, or unencodable.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

#: The most characters of one attacker-supplied value that a message, receipt or log echoes.
MAX_ECHO_CHARS = 64
#: The most characters of an error message, a verdict reason or an evidence detail.
MAX_MESSAGE_CHARS = 512
#: The most characters of one request-derived field of a log line (a raw path, say).
MAX_LOG_FIELD_CHARS = 256

_SURROGATE = re.compile("[\ud800-\udfff]")


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` as valid Unicode (lone surrogates become U+FFFD), cut to ``limit`` characters.

    A cut text ends with ``...(cut N characters)``, within ``limit`` in all.
    """
    if _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
    if len(text) <= limit:
        return text
    keep = max(0, limit - 32)  # room for the marker, whatever N is
    return f"{text[:keep]}...(cut {len(text) - keep} characters)"


def echo(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """Quote an attacker-supplied value for a message: ``repr``, at most ``limit`` characters.

    ``repr`` escapes control characters and lone surrogates, so the result is printable,
    valid Unicode and one line.
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 3)] + "..."


def log_field(value: str | None, limit: int = MAX_LOG_FIELD_CHARS) -> str | None:
    """A request-derived value for a log line: one printable line of at most ``limit``.

    Text with control or other non-printable characters is written as its ``repr`` body,
    so a value cannot forge a second log line.
    """
    if value is None:
        return None
    if not value.isprintable():
        value = repr(value)[1:-1]
    return bounded(value, limit)


class ChioError(Exception):
    """Base of every request-level failure; renders its own PROTOCOL.md 8 error body."""

    code: ClassVar[str] = "chio_error"
    status: ClassVar[int] = 500
    #: The guard name recorded in the receipt's deny verdict and evidence.
    guard: ClassVar[str] = "ChioMiddleware"

    def __init__(self, message: str) -> None:
        message = bounded(message)  # every echo of attacker text stays small and encodable
        super().__init__(message)
        self.message = message

    @property
    def evidence_details(self) -> str:
        """What the receipt's evidence says of this failure (the message, unless refined)."""
        return self.message

    def to_body(self, receipt_id: str | None = None) -> dict[str, Any]:
        """Return the JSON error envelope of PROTOCOL.md 8."""
        body: dict[str, Any] = {"error": self.code, "message": self.message, "status": self.status}
        if receipt_id is not None:
            body["receipt_id"] = receipt_id
        return body


class BadRequest(ChioError):
    """Malformed header, JSON, body, duplicate header or query key, bad Content-Length."""

    code = "chio_bad_request"
    status = 400
    guard = "RequestGuard"


class MalformedHeader(BadRequest):
    """A Chio header value that is neither raw JSON nor base64url JSON of one object."""


class CapabilityRequired(ChioError):
    """A route that needs a capability got none."""

    code = "chio_capability_required"
    status = 401
    guard = "CapabilityGuard"


class CapabilityInvalid(ChioError):
    """The capability failed verification; ``reason`` names the failed check."""

    code = "chio_capability_invalid"
    status = 401
    guard = "CapabilityGuard"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class DpopRequired(ChioError):
    """DPoP is required and the header is absent."""

    code = "chio_dpop_required"
    status = 401
    guard = "DpopGuard"


class DpopInvalid(ChioError):
    """A DPoP verification step (PROTOCOL.md 3, steps 1-5) failed; ``step`` names it."""

    code = "chio_dpop_invalid"
    status = 401
    guard = "DpopGuard"

    def __init__(self, message: str, *, step: str) -> None:
        super().__init__(message)
        self.step = step


class ReplayDetected(ChioError):
    """A DPoP proof nonce or an execution nonce was already used.

    The store says what it observed of the slot: ``prior_presentations`` (how many times it
    was presented before this one, the first, accepted, use included) and ``first_used_at``
    (Unix seconds); ``None`` when it does not know. The engine adds ``slot_kind`` and
    ``slot`` (a hash of the store key, never the nonce itself) for the receipt.
    """

    code = "chio_replay_detected"
    status = 401
    guard = "ReplayGuard"
    step = "replay"

    def __init__(
        self,
        message: str,
        *,
        prior_presentations: int | None = None,
        first_used_at: float | None = None,
    ) -> None:
        super().__init__(message)
        self.prior_presentations = prior_presentations
        self.first_used_at = first_used_at
        self.slot_kind: str | None = None
        self.slot: str | None = None

    @property
    def evidence_details(self) -> str:
        """The message, with what the store observed of the slot."""
        if self.prior_presentations is None:
            return self.message
        first = "" if self.first_used_at is None else f", first used at {int(self.first_used_at)}"
        return f"{self.message}: presented {self.prior_presentations} time(s) before{first}"

    def observation(self) -> dict[str, Any] | None:
        """The replay observation for the receipt's ``metadata.chio_replay``, if known."""
        if self.prior_presentations is None:
            return None
        observed: dict[str, Any] = {"prior_presentations": self.prior_presentations}
        if self.first_used_at is not None:
            observed["first_used_at"] = int(self.first_used_at)
        if self.slot_kind is not None:
            observed["kind"] = self.slot_kind
        if self.slot is not None:
            observed["slot"] = self.slot
        return observed


class StateForgotten(ChioError):
    """The shared replay store lost its state (a restart without persistence, a flush, a
    failover that lost writes, a deleted file): a DPoP proof or execution nonce issued before
    that was noticed might be a replay, and a ``max_invocations`` count of a capability issued
    before it is lost, so they are refused; fresh proofs, nonces and capabilities work."""

    code = "chio_state_forgotten"
    status = 401
    guard = "ReplayGuard"

    def __init__(self, message: str, *, guard: str | None = None) -> None:
        super().__init__(message)
        if guard is not None:
            self.guard = guard  # type: ignore[misc]


class NonceInvalid(ChioError):
    """An execution nonce failed verification (PROTOCOL.md 4); ``step`` names the check."""

    code = "chio_nonce_invalid"
    status = 401
    guard = "ExecutionNonceGuard"

    def __init__(self, message: str, *, step: str) -> None:
        super().__init__(message)
        self.step = step


class AccessDenied(ChioError):
    """Valid credentials, but no matching grant, or a constraint or guard said no."""

    code = "chio_access_denied"
    status = 403
    guard = "CapabilityGuard"

    def __init__(self, message: str, *, guard: str | None = None) -> None:
        super().__init__(message)
        if guard is not None:
            self.guard = guard  # type: ignore[misc]


class PayloadTooLarge(ChioError):
    """The request body is above ``max_body_bytes``."""

    code = "chio_payload_too_large"
    status = 413
    guard = "BodyLimitGuard"


class HeadersTooLarge(ChioError):
    """A Chio header value is above its size bound."""

    code = "chio_headers_too_large"
    status = 431
    guard = "RequestGuard"


class NonceRequired(ChioError):
    """The route requires an execution nonce; the response carries a fresh one (428)."""

    code = "chio_nonce_required"
    status = 428
    guard = "ExecutionNonceGuard"


class RateLimited(ChioError):
    """A rate or budget guard refused the call; ``retry_after`` is in whole seconds."""

    code = "chio_rate_limited"
    status = 429
    guard = "RateLimitGuard"

    def __init__(self, message: str, *, retry_after: int, guard: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))
        if guard is not None:
            self.guard = guard  # type: ignore[misc]


class ReservationQuotaExceeded(RateLimited):
    """The capability subject already holds its quota of live replay slots (proofs, nonces).

    A 429, never a 503: one subject's flood is refused to that subject alone, while the
    store keeps room for everyone else. ``retry_after`` is the wait until its oldest slot
    can have expired.
    """

    guard = "ReplayQuotaGuard"


class FederationInvalid(ChioError):
    """A handshake envelope failed a check (PROTOCOL.md 9); ``step`` names it."""

    code = "chio_federation_invalid"
    status = 401
    guard = "FederationGuard"

    def __init__(self, message: str, *, step: str) -> None:
        super().__init__(message)
        self.step = step


class FederationUntrusted(ChioError):
    """A handshake from a kernel with no anchor or pin, or with another key (PROTOCOL.md 9)."""

    code = "chio_federation_untrusted"
    status = 403
    guard = "FederationGuard"

    def __init__(self, message: str, *, step: str) -> None:
        super().__init__(message)
        self.step = step


class Unavailable(ChioError):
    """The replay store or the receipt sink failed: fail closed."""

    code = "chio_unavailable"
    status = 503
    guard = "ChioMiddleware"


class StoreFull(Unavailable):
    """The in-memory replay store is full of live entries and refuses new ones."""
