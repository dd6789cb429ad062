"""Trust that expires: federation anchors as issuers and nonce signers (PROTOCOL.md 2, 4, 9).

A key configured as a federation trust anchor (``federation_peers``: kernel id -> key) is
accepted as a capability issuer or execution-nonce signer only while that kernel's pin is
fresh (``now < rotationDue``); keys in ``trusted_issuers``/``trusted_kernel_keys`` stay
trusted statically. :class:`FederationTrust` also answers the handshake route
(``POST /chio/federation/handshake``).

Caching: a fresh pin read from the store is kept in this process until
``min(rotationDue, read_at + pin_cache_ttl)``, so a request with a warm pin makes no store
round trip. How changes reach other workers:

- a handshake on this worker updates this worker's cache at once; other workers keep their
  cached (older, still fresh) pin and read the renewed one when it leaves their cache, so a
  re-pin never leaves a gap;
- ``forget`` (and a pin that went stale) reaches a worker when its cached entry expires:
  within ``pin_cache_ttl`` seconds (default 60), never later than the old ``rotationDue``;
- a stale or missing pin is never cached: every refused request reads the store again, so
  a re-handshake on any worker is honoured by every worker at its next request.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .canonical import JsonParseError, canonical_json, parse_json
from .crypto import KeyFormatError, PublicKey, SignatureInvalid, SigningKey
from .errors import BadRequest, CapabilityInvalid, NonceInvalid
from .federation import (
    DEFAULT_MAX_HANDSHAKE_SKEW,
    DEFAULT_ROTATION_WINDOW,
    AsyncPeerStore,
    FederationPeer,
    PinNotUsable,
    accept_envelope,
    new_nonce,
    resolve_pin,
    sign_envelope,
)
from .models import SignedExecutionNonce
from .replay import AsyncReplayStore

__all__ = [
    "DEFAULT_PIN_CACHE_TTL",
    "FEDERATION_PATH",
    "MAX_HANDSHAKE_BODY",
    "FederationConfig",
    "FederationTrust",
]

#: The handshake route (PROTOCOL.md 9).
FEDERATION_PATH = "/chio/federation/handshake"
#: Largest accepted handshake body (PROTOCOL.md 9).
MAX_HANDSHAKE_BODY = 16 * 1024
#: Seconds a fresh pin is trusted from this process's cache before the store is read again.
DEFAULT_PIN_CACHE_TTL = 60
_MAX_ISSUERS = 1024


@dataclass(frozen=True)
class FederationConfig:
    """This middleware's kernel id, its trust anchors and the timing of pins."""

    kernel_id: str
    anchors: Mapping[str, PublicKey]
    rotation_window: int = DEFAULT_ROTATION_WINDOW
    max_skew: int = DEFAULT_MAX_HANDSHAKE_SKEW
    pin_cache_ttl: int = DEFAULT_PIN_CACHE_TTL
    #: Keys trusted statically as issuers (``trusted_issuers``, our own): never pinned.
    static_issuers: frozenset[PublicKey] = field(default_factory=frozenset)
    #: Keys trusted statically as nonce signers (``trusted_kernel_keys``, our own).
    static_nonce_signers: frozenset[PublicKey] = field(default_factory=frozenset)

    def policy_view(self) -> dict[str, Any]:
        """The federation part of the effective policy (its hash is in every receipt)."""
        return {
            "kernel_id": self.kernel_id,
            "peers": {k: v.hex for k, v in sorted(self.anchors.items())},
            "rotation_window": self.rotation_window,
            "max_skew": self.max_skew,
        }


class FederationTrust:
    """Pin freshness for anchored keys, cached per process, and the handshake answer."""

    def __init__(self, config: FederationConfig, signing_key: SigningKey) -> None:
        self.config = config
        self.signing_key = signing_key
        self.kernel_of = {key: kernel for kernel, key in config.anchors.items()}
        self._issuers: dict[str, str | None] = {}
        self._cache: dict[str, tuple[FederationPeer, int]] = {}
        self._lock = threading.Lock()

    @property
    def anchor_keys(self) -> frozenset[PublicKey]:
        """Every anchored key (admitted by the signature checks, then held to its pin)."""
        return frozenset(self.kernel_of)

    def is_handshake(self, method: str, path: str) -> bool:
        """True for the handshake route."""
        return method == "POST" and path == FEDERATION_PATH

    # -- freshness ----------------------------------------------------------------------

    def _federated_kernel(self, issuer: str) -> str | None:
        """The anchored kernel whose key ``issuer`` is, unless that key is trusted statically."""
        try:
            return self._issuers[issuer]
        except KeyError:
            pass
        try:
            key = PublicKey.from_hex(issuer)
        except KeyFormatError:
            return None
        kernel = None if key in self.config.static_issuers else self.kernel_of.get(key)
        with self._lock:
            if len(self._issuers) >= _MAX_ISSUERS:
                self._issuers.clear()
            self._issuers[issuer] = kernel
        return kernel

    async def _fresh_pin(self, kernel: str, now: int, peers: AsyncPeerStore) -> FederationPeer:
        cached = self._cache.get(kernel)
        if cached is not None and now < cached[1]:
            return cached[0]
        peer = await peers.get_peer(kernel)
        if peer is not None and PublicKey.from_hex(peer.public_key) != self.config.anchors[kernel]:
            peer = None  # pinned under an anchor key that has since been replaced
        resolved = resolve_pin(peer, kernel, now)
        self._remember(resolved, now)
        return resolved

    def _remember(self, peer: FederationPeer, now: int) -> None:
        if self.config.pin_cache_ttl > 0 and peer.kernel_id in self.config.anchors:
            until = min(peer.rotation_due, now + self.config.pin_cache_ttl)
            with self._lock:
                self._cache[peer.kernel_id] = (peer, until)

    async def check_issuer(self, issuer: str, now: int, peers: AsyncPeerStore) -> None:
        """Refuse a capability whose issuer is an anchored key without a fresh pin (401)."""
        kernel = self._federated_kernel(issuer)
        if kernel is None:
            return
        try:
            await self._fresh_pin(kernel, now, peers)
        except PinNotUsable as exc:
            raise CapabilityInvalid(
                f"capability issuer is the key of federation peer {kernel!r}: "
                f"{_pin_problem(exc)}",
                reason="stale_federation_pin",
            ) from None

    def nonce_signer(self, signed: SignedExecutionNonce) -> str | None:
        """The anchored kernel (not statically trusted) whose key signed ``signed``."""
        message = canonical_json(signed.nonce.to_wire())
        for key, kernel in self.kernel_of.items():
            if key in self.config.static_nonce_signers:
                continue
            try:
                key.verify(message, signed.signature)
            except (SignatureInvalid, KeyFormatError):
                continue
            return kernel
        return None

    async def check_nonce_signer(self, kernel: str, now: int, peers: AsyncPeerStore) -> None:
        """Refuse a nonce signed by an anchored key without a fresh pin (401)."""
        try:
            await self._fresh_pin(kernel, now, peers)
        except PinNotUsable as exc:
            raise NonceInvalid(
                f"execution nonce is signed by federation peer {kernel!r}: {_pin_problem(exc)}",
                step="stale_federation_pin",
            ) from None

    # -- the handshake route --------------------------------------------------------------

    async def handshake(
        self, body: bytes, now: int, peers: AsyncPeerStore, nonces: AsyncReplayStore
    ) -> tuple[FederationPeer, bytes]:
        """Accept the sender's envelope; the pin and the JSON answer with our envelope."""
        if not body:
            raise BadRequest("the handshake needs a JSON envelope as its body")
        try:
            obj = parse_json(body)
        except JsonParseError as exc:
            raise BadRequest(f"handshake body is not valid JSON: {exc}") from None
        config = self.config
        peer = await accept_envelope(
            obj,
            kernel_id=config.kernel_id,
            now=now,
            anchors=config.anchors,
            peers=peers,
            nonces=nonces,
            rotation_window=config.rotation_window,
            max_skew=config.max_skew,
        )
        self._remember(peer, now)
        ours = sign_envelope(
            self.signing_key,
            local_kernel_id=config.kernel_id,
            remote_kernel_id=peer.kernel_id,
            nonce=new_nonce(),
            timestamp=now,
        )
        answer = canonical_json({"peer": peer.to_wire(), "envelope": ours.to_wire()})
        return peer, answer


def _pin_problem(exc: PinNotUsable) -> str:
    if exc.result == "stale" and exc.peer is not None:
        return (
            f"its federation pin is stale (rotationDue {exc.peer.rotation_due} has passed); "
            "the kernel must re-handshake"
        )
    return "it has no federation pin; the kernel must handshake first"
