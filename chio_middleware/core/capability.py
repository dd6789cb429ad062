"""Capability token verification (PROTOCOL.md 2).

The checks are separate functions (signature, delegation chain, time) so that each upstream
vector expectation maps onto one of them; :class:`CapabilityVerifier` runs them all for the
middleware, caching the time-independent results by the hash of the token's exact bytes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from .canonical import canonical_json
from .crypto import (
    KeyFormatError,
    PublicKey,
    SignatureInvalid,
    SigningKey,
    UnsupportedKeyType,
    sha256_hex,
)
from .errors import CapabilityInvalid
from .models import CAPABILITY_SCHEMA, CapabilityToken

__all__ = [
    "DEFAULT_MAX_DELEGATION_DEPTH",
    "CapabilityVerifier",
    "capability_time_status",
    "check_capability_time",
    "parse_capability",
    "sign_capability",
    "verify_capability_signature",
    "verify_delegation_chain",
]

DEFAULT_MAX_DELEGATION_DEPTH = 4

#: The members a 0.1.0 token can have; a token with any other member has no legacy form.
_LEGACY_MEMBERS = frozenset(
    {"id", "issuer", "subject", "scope", "issued_at", "expires_at", "delegation_chain"}
)
#: Members that are never part of the signed body.
_UNSIGNED_MEMBERS = ("signature", "algorithm")


def parse_capability(obj: Any) -> CapabilityToken:
    """Parse a capability object; a wrong shape is ``CapabilityInvalid(reason="malformed")``."""
    if isinstance(obj, CapabilityToken):
        return obj
    try:
        return CapabilityToken.model_validate(obj)
    except ValidationError as exc:
        raise CapabilityInvalid(
            f"invalid capability token: {exc.error_count()} malformed field(s)",
            reason="malformed",
        ) from None


def _key(value: str, what: str) -> PublicKey:
    try:
        return PublicKey.from_hex(value)
    except UnsupportedKeyType as exc:
        raise CapabilityInvalid(f"{what}: {exc}", reason="unsupported_key_type") from None
    except KeyFormatError as exc:
        raise CapabilityInvalid(f"{what}: {exc}", reason="malformed") from None


def verify_capability_signature(token: CapabilityToken) -> None:
    """Check the issuer's signature; raise ``CapabilityInvalid(reason="signature")``.

    The signed body is the token without ``signature`` (and without ``algorithm``, which the
    reference never signs), first with ``"schema": "chio.capability.v1"`` added when absent;
    when that fails and the token has no member newer than 0.1.0, the body without schema.
    """
    if token.schema_ is not None and token.schema_ != CAPABILITY_SCHEMA:
        raise CapabilityInvalid("capability has an unsupported schema", reason="malformed")
    if token.algorithm is not None and token.algorithm.lower() != "ed25519":
        raise CapabilityInvalid(
            f"capability algorithm {token.algorithm!r} is not supported; only Ed25519 is",
            reason="unsupported_key_type",
        )
    issuer = _key(token.issuer, "capability issuer")
    wire = token.to_wire()
    signature = wire["signature"]
    body = {k: v for k, v in wire.items() if k not in _UNSIGNED_MEMBERS}
    candidates = [{**body, "schema": CAPABILITY_SCHEMA}]
    if "algorithm" in wire:
        # PROTOCOL.md 2 reads "the token without signature"; accept that form as well.
        candidates.append({**candidates[0], "algorithm": wire["algorithm"]})
    if body.keys() - {"schema"} <= _LEGACY_MEMBERS:
        candidates.append({k: v for k, v in body.items() if k != "schema"})
    for candidate in candidates:
        try:
            issuer.verify(canonical_json(candidate), signature)
        except SignatureInvalid:
            continue
        except UnsupportedKeyType as exc:
            raise CapabilityInvalid(str(exc), reason="unsupported_key_type") from None
        return
    raise CapabilityInvalid("capability signature verification failed", reason="signature")


def verify_delegation_chain(
    token: CapabilityToken, *, max_depth: int | None = DEFAULT_MAX_DELEGATION_DEPTH
) -> None:
    """Check the delegation chain's shape; raise ``CapabilityInvalid(reason="delegation")``.

    At most ``max_depth`` links; each link signed by its delegator over the link without
    ``signature``; consecutive links connect; timestamps never decrease.
    """
    chain = token.delegation_chain or []
    if max_depth is not None and len(chain) > max_depth:
        raise CapabilityInvalid(
            f"delegation chain has {len(chain)} links; at most {max_depth} allowed",
            reason="delegation",
        )
    for index, link in enumerate(chain):
        delegator = _key(link.delegator, f"delegation link {index} delegator")
        _key(link.delegatee, f"delegation link {index} delegatee")
        try:
            delegator.verify(canonical_json(link.signing_body()), link.signature)
        except (SignatureInvalid, KeyFormatError):
            raise CapabilityInvalid(
                f"delegation chain signature invalid at link {index}", reason="delegation"
            ) from None
        if index:
            previous = chain[index - 1]
            if _key(previous.delegatee, "delegatee") != delegator:
                raise CapabilityInvalid(
                    f"delegation link {index} delegator does not match link {index - 1} delegatee",
                    reason="delegation",
                )
            if link.timestamp < previous.timestamp:
                raise CapabilityInvalid(
                    f"delegation link {index} timestamp precedes link {index - 1}",
                    reason="delegation",
                )


def capability_time_status(token: CapabilityToken, now: int) -> str:
    """``"valid"``, ``"not_yet_valid"`` or ``"expired"`` (valid: issued_at <= now < expires_at)."""
    if now < token.issued_at:
        return "not_yet_valid"
    if now >= token.expires_at:
        return "expired"
    return "valid"


def check_capability_time(token: CapabilityToken, now: int) -> None:
    """Raise ``CapabilityInvalid`` with reason ``expired`` or ``not_yet_valid``."""
    status = capability_time_status(token, now)
    if status == "expired":
        raise CapabilityInvalid("capability token has expired", reason="expired")
    if status == "not_yet_valid":
        raise CapabilityInvalid("capability token is not yet valid", reason="not_yet_valid")


class CapabilityVerifier:
    """Everything PROTOCOL.md 2 requires before a token is accepted, except the grant.

    Signature, issuer trust and chain results do not depend on time, so they are cached
    (bounded LRU) by the SHA-256 of the token's exact bytes; time and revocation are
    checked on every use. Beyond PROTOCOL.md 2, and as the reference kernel does, a
    delegated token's last delegatee must be its subject, and revoking any ancestor
    (a link's ``capability_id``) revokes the token.
    """

    def __init__(
        self,
        *,
        trusted_issuers: Iterable[PublicKey],
        revoked: Iterable[str] = (),
        max_delegation_depth: int = DEFAULT_MAX_DELEGATION_DEPTH,
        cache_size: int = 1024,
    ) -> None:
        self.trusted_issuers = frozenset(trusted_issuers)
        self.revoked = frozenset(revoked)
        self.max_delegation_depth = max_delegation_depth
        self.cache_size = cache_size
        self._cache: OrderedDict[str, CapabilityToken | CapabilityInvalid] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, obj: Any, *, now: int, raw: bytes | None = None) -> CapabilityToken:
        """Verify a token object (``raw``: its exact header bytes, the cache key)."""
        key = sha256_hex(raw if raw is not None else canonical_json(obj))
        return self._verify_keyed(key, lambda: obj, now)

    def verify_encoded(
        self, raw: bytes, *, now: int, decode: Callable[[bytes], Any]
    ) -> CapabilityToken:
        """Verify a token from its header bytes, decoding them only on a cache miss.

        A value that does not decode raises what ``decode`` raises and is not cached.
        """
        return self._verify_keyed(sha256_hex(raw), lambda: decode(raw), now)

    def _verify_keyed(self, cache_key: str, load: Callable[[], Any], now: int) -> CapabilityToken:
        with self._lock:
            cached = self._cache.get(cache_key)
            if cached is not None:
                self._cache.move_to_end(cache_key)
        if cached is None:
            obj = load()
            try:
                cached = self._verify_static(obj)
            except CapabilityInvalid as exc:
                cached = exc
            with self._lock:
                self._cache[cache_key] = cached
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        if isinstance(cached, CapabilityInvalid):
            raise CapabilityInvalid(cached.message, reason=cached.reason)
        token = cached
        check_capability_time(token, now)
        lineage = {token.id, *(link.capability_id for link in token.delegation_chain or ())}
        if not self.revoked.isdisjoint(lineage):
            raise CapabilityInvalid("capability has been revoked", reason="revoked")
        return token

    def _verify_static(self, obj: Any) -> CapabilityToken:
        token = parse_capability(obj)
        if _key(token.issuer, "capability issuer") not in self.trusted_issuers:
            raise CapabilityInvalid("capability issuer is not trusted", reason="untrusted_issuer")
        subject = _key(token.subject, "capability subject")
        verify_capability_signature(token)
        verify_delegation_chain(token, max_depth=self.max_delegation_depth)
        chain = token.delegation_chain or []
        if chain and _key(chain[-1].delegatee, "delegatee") != subject:
            raise CapabilityInvalid(
                "delegation chain final delegatee does not match capability subject",
                reason="delegation",
            )
        return token


def sign_capability(issuer: SigningKey, body: Mapping[str, Any]) -> CapabilityToken:
    """Sign a token body as a current Chio issuer does (``schema`` included and signed).

    ``body`` holds every member but ``signature``; ``schema`` is set to
    ``chio.capability.v1`` when absent. Used by the CLI's ``issue`` and by tests.
    """
    unsigned = parse_capability({**body, "signature": "00" * 64}).to_wire()
    del unsigned["signature"]
    unsigned.setdefault("schema", CAPABILITY_SCHEMA)
    if PublicKey.from_hex(unsigned["issuer"]) != issuer.public_key:
        raise ValueError("the token's issuer member is not the signing key's public key")
    signed_body = {k: v for k, v in unsigned.items() if k not in _UNSIGNED_MEMBERS}
    return parse_capability({**unsigned, "signature": issuer.sign(canonical_json(signed_body))})
