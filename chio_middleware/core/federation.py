"""Federation trust: the Chio kernel handshake (PROTOCOL.md 9).

The objects are the reference's (``chio-federation`` trust establishment, schema
``chio.federation-kernel-handshake.v1``), with its camelCase members and its strictness:
unknown members are refused, except the newer optional challenge members ``capabilities``,
``conformanceTier`` and ``ladderManifestRef``, which stay under the signature and are
neither interpreted nor emitted. :func:`sign_envelope` makes an envelope;
:func:`accept_envelope` runs the eight steps of PROTOCOL.md 9 in their order (first failure
wins; an invalid envelope never burns a nonce) against a :class:`PeerStore` of pins and a
replay store of handshake nonces; :func:`resolve_pin` says whether a pin is usable at a
clock. The acceptance is written once, as a coroutine over the async views of the stores;
:func:`accept_envelope_sync` drives it for synchronous callers (the WSGI path, the CLI).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping
from typing import Annotated, Any, Protocol, runtime_checkable

from pydantic import Field, JsonValue, ValidationError

from .canonical import canonical_json
from .crypto import (
    KeyFormatError,
    PublicKey,
    SignatureInvalid,
    SigningKey,
    UnsupportedKeyType,
    sha256_hex,
)
from .errors import ChioError, FederationInvalid, FederationUntrusted
from .models import U64, WireModel
from .replay import AsyncReplayStore, ReplayStore, SyncStoreAsAsync, run_sync

__all__ = [
    "DEFAULT_MAX_HANDSHAKE_SKEW",
    "DEFAULT_ROTATION_WINDOW",
    "FEDERATION_SCHEMA",
    "AsyncPeerStore",
    "FederationPeer",
    "HandshakeChallenge",
    "MemoryPeerStore",
    "PeerHandshakeEnvelope",
    "PeerStore",
    "PinNotUsable",
    "SyncPeerStoreAsAsync",
    "accept_envelope",
    "accept_envelope_sync",
    "challenge_bytes",
    "check_envelope",
    "handshake_nonce_slot",
    "new_nonce",
    "parse_envelope",
    "parse_peer",
    "resolve_pin",
    "sign_envelope",
]

FEDERATION_SCHEMA = "chio.federation-kernel-handshake.v1"
#: Seconds a pin stays fresh after a handshake (the reference's 12 h).
DEFAULT_ROTATION_WINDOW = 43_200
#: Largest accepted distance between an envelope's timestamp and our clock (5 min).
DEFAULT_MAX_HANDSHAKE_SKEW = 300

Nonce = Annotated[str, Field(min_length=1, max_length=256)]


class HandshakeChallenge(WireModel):
    """``{schema, localKernelId, remoteKernelId, nonce, timestamp}``: sender, addressee."""

    schema_: str = Field(alias="schema")
    local_kernel_id: str = Field(alias="localKernelId")
    remote_kernel_id: str = Field(alias="remoteKernelId")
    nonce: Nonce
    timestamp: U64
    # Newer reference members: accepted, signed over as received, never interpreted.
    capabilities: JsonValue = None
    conformance_tier: JsonValue = Field(default=None, alias="conformanceTier")
    ladder_manifest_ref: JsonValue = Field(default=None, alias="ladderManifestRef")


class PeerHandshakeEnvelope(WireModel):
    """A challenge, the sender's key and its signature over ``JCS(challenge)`` (hex)."""

    challenge: HandshakeChallenge
    declared_public_key: str = Field(alias="declaredPublicKey")
    signature: str


class FederationPeer(WireModel):
    """A pinned kernel key: ``{kernelId, publicKey, establishedAt, rotationDue}``."""

    kernel_id: str = Field(alias="kernelId")
    public_key: str = Field(alias="publicKey")
    established_at: U64 = Field(alias="establishedAt")
    rotation_due: U64 = Field(alias="rotationDue")

    def is_fresh(self, now: int) -> bool:
        """Usable while ``now < rotationDue``."""
        return now < self.rotation_due


class PinNotUsable(ValueError):
    """No usable pin for a kernel at a clock; ``result`` is ``stale`` or ``not_pinned``."""

    def __init__(self, kernel_id: str, result: str, peer: FederationPeer | None) -> None:
        what = "is stale (rotationDue passed)" if result == "stale" else "is not pinned"
        super().__init__(f"federation peer {kernel_id!r} {what}; it must re-handshake")
        self.kernel_id = kernel_id
        self.result = result
        self.peer = peer


def challenge_bytes(challenge: HandshakeChallenge) -> bytes:
    """The signed bytes of a challenge: ``JCS(challenge)`` with every member it carries."""
    return canonical_json(challenge.to_wire())


def new_nonce() -> str:
    """A fresh handshake nonce (128 random bits, hex)."""
    return secrets.token_hex(16)


def sign_envelope(
    key: SigningKey, *, local_kernel_id: str, remote_kernel_id: str, nonce: str, timestamp: int
) -> PeerHandshakeEnvelope:
    """Sign a challenge from ``local_kernel_id`` to ``remote_kernel_id`` with ``key``."""
    challenge = HandshakeChallenge(
        schema_=FEDERATION_SCHEMA,
        local_kernel_id=local_kernel_id,
        remote_kernel_id=remote_kernel_id,
        nonce=nonce,
        timestamp=timestamp,
    )
    return PeerHandshakeEnvelope(
        challenge=challenge,
        declared_public_key=key.public_key.hex,
        signature=key.sign(challenge_bytes(challenge)),
    )


def parse_envelope(obj: Any) -> PeerHandshakeEnvelope:
    """Parse an envelope object; a wrong shape is ``FederationInvalid(step="malformed")``."""
    if isinstance(obj, PeerHandshakeEnvelope):
        return obj
    try:
        return PeerHandshakeEnvelope.model_validate(obj)
    except ValidationError as exc:
        raise FederationInvalid(
            f"handshake envelope is malformed: {exc.error_count()} bad member(s)",
            step="malformed",
        ) from None


def parse_peer(obj: Any) -> FederationPeer:
    """Parse a stored pin; ``ValueError`` when it is not a FederationPeer."""
    peer = FederationPeer.model_validate(obj)
    PublicKey.from_hex(peer.public_key)
    return peer


def resolve_pin(peer: FederationPeer | None, kernel_id: str, now: int) -> FederationPeer:
    """The pin of ``kernel_id`` if usable at ``now``; else raise :class:`PinNotUsable`."""
    if peer is None:
        raise PinNotUsable(kernel_id, "not_pinned", None)
    if not peer.is_fresh(now):
        raise PinNotUsable(kernel_id, "stale", peer)
    return peer


def check_envelope(
    envelope: PeerHandshakeEnvelope,
    *,
    kernel_id: str,
    now: int,
    max_skew: int = DEFAULT_MAX_HANDSHAKE_SKEW,
) -> PublicKey:
    """Steps 1-4 of PROTOCOL.md 9 (schema, signature, addressee, clock); the declared key."""
    challenge = envelope.challenge
    if challenge.schema_ != FEDERATION_SCHEMA:
        raise FederationInvalid("handshake envelope has an unsupported schema", step="schema")
    try:
        declared = PublicKey.from_hex(envelope.declared_public_key)
        declared.verify(challenge_bytes(challenge), envelope.signature)
    except UnsupportedKeyType as exc:
        raise FederationInvalid(f"handshake envelope: {exc}", step="signature") from None
    except (SignatureInvalid, KeyFormatError):
        raise FederationInvalid(
            "handshake signature does not verify with the declared key", step="signature"
        ) from None
    if challenge.remote_kernel_id != kernel_id:
        raise FederationInvalid(
            f"handshake envelope is addressed to another kernel, not {kernel_id!r}",
            step="addressee",
        )
    if abs(challenge.timestamp - now) > max_skew:
        raise FederationInvalid(
            f"handshake timestamp is more than {max_skew} s from our clock", step="clock_skew"
        )
    return declared


def expected_key(
    sender: str, anchors: Mapping[str, PublicKey], pinned: FederationPeer | None
) -> PublicKey:
    """Step 5: the anchor's key, else the pinned key; no anchor and no pin is untrusted."""
    anchor = anchors.get(sender)
    if anchor is not None:
        return anchor
    if pinned is not None:
        return PublicKey.from_hex(pinned.public_key)
    raise FederationUntrusted(
        f"kernel {sender!r} has no trust anchor and no pin; first contact is refused",
        step="untrusted",
    )


def handshake_nonce_slot(envelope: PeerHandshakeEnvelope, max_skew: int) -> tuple[str, int]:
    """Step 7's replay key and expiry: the pair is live while the envelope could be accepted."""
    challenge = envelope.challenge
    digest = sha256_hex(canonical_json([challenge.local_kernel_id, challenge.nonce]))
    return "federation:" + digest, challenge.timestamp + max_skew + 1


@runtime_checkable
class PeerStore(Protocol):
    """Pinned federation peers, shared by every worker (PROTOCOL.md 9). Atomic operations."""

    def get_peer(self, kernel_id: str) -> FederationPeer | None:
        """The pin of ``kernel_id``, fresh or stale, or ``None``."""

    def put_peer(self, peer: FederationPeer) -> None:
        """Pin ``peer``, replacing the kernel's older pin."""

    def forget_peer(self, kernel_id: str) -> bool:
        """Remove the pin of ``kernel_id``; ``True`` when there was one."""

    def list_peers(self) -> list[FederationPeer]:
        """Every pin, sorted by kernel id."""


class AsyncPeerStore(Protocol):
    """The same operations for the ASGI path."""

    async def get_peer(self, kernel_id: str) -> FederationPeer | None:
        """See :meth:`PeerStore.get_peer`."""

    async def put_peer(self, peer: FederationPeer) -> None:
        """See :meth:`PeerStore.put_peer`."""


class SyncPeerStoreAsAsync:
    """Runs a sync peer store inline behind the async interface (memory, SQLite, WSGI)."""

    def __init__(self, store: PeerStore) -> None:
        self.store = store

    async def get_peer(self, kernel_id: str) -> FederationPeer | None:
        """See :meth:`PeerStore.get_peer`."""
        return self.store.get_peer(kernel_id)

    async def put_peer(self, peer: FederationPeer) -> None:
        """See :meth:`PeerStore.put_peer`."""
        self.store.put_peer(peer)


class MemoryPeerStore:
    """One process's pins (the reference's default); use SQLite or Redis to share them."""

    def __init__(self, peers: Mapping[str, FederationPeer] | None = None) -> None:
        self._lock = threading.Lock()
        self._peers: dict[str, FederationPeer] = dict(peers or {})

    def get_peer(self, kernel_id: str) -> FederationPeer | None:
        """The pin of ``kernel_id`` or ``None``."""
        with self._lock:
            return self._peers.get(kernel_id)

    def put_peer(self, peer: FederationPeer) -> None:
        """Pin ``peer``, replacing an older pin."""
        with self._lock:
            self._peers[peer.kernel_id] = peer

    def forget_peer(self, kernel_id: str) -> bool:
        """Remove a pin; ``True`` when there was one."""
        with self._lock:
            return self._peers.pop(kernel_id, None) is not None

    def list_peers(self) -> list[FederationPeer]:
        """Every pin, sorted by kernel id."""
        with self._lock:
            return [self._peers[k] for k in sorted(self._peers)]

    def close(self) -> None:
        """Nothing to release."""


async def accept_envelope(
    obj: Any,
    *,
    kernel_id: str,
    now: int,
    anchors: Mapping[str, PublicKey],
    peers: AsyncPeerStore,
    nonces: AsyncReplayStore,
    rotation_window: int = DEFAULT_ROTATION_WINDOW,
    max_skew: int = DEFAULT_MAX_HANDSHAKE_SKEW,
) -> FederationPeer:
    """Accept an envelope at ``now`` (PROTOCOL.md 9, steps 1-8); return the new pin.

    Raises :class:`FederationInvalid` (401) or :class:`FederationUntrusted` (403) with
    ``step`` naming the first failed check; store failures raise ``Unavailable``.
    """
    envelope = parse_envelope(obj)
    declared = check_envelope(envelope, kernel_id=kernel_id, now=now, max_skew=max_skew)
    sender = envelope.challenge.local_kernel_id
    pinned = None if sender in anchors else await peers.get_peer(sender)
    if declared != expected_key(sender, anchors, pinned):
        raise FederationUntrusted(
            f"kernel {sender!r} declared a key other than its anchored or pinned key",
            step="unexpected_key",
        )
    key, expires_at = handshake_nonce_slot(envelope, max_skew)
    try:
        await nonces.reserve(key, expires_at=expires_at, now=now)
    except ChioError as exc:
        if exc.code != "chio_replay_detected":
            raise
        raise FederationInvalid("handshake nonce was already used", step="replay") from None
    peer = FederationPeer(
        kernel_id=sender,
        public_key=declared.hex,
        established_at=now,
        rotation_due=min(now + rotation_window, 2**64 - 1),
    )
    await peers.put_peer(peer)
    return peer


def accept_envelope_sync(
    obj: Any,
    *,
    kernel_id: str,
    now: int,
    anchors: Mapping[str, PublicKey],
    peers: PeerStore,
    nonces: ReplayStore,
    rotation_window: int = DEFAULT_ROTATION_WINDOW,
    max_skew: int = DEFAULT_MAX_HANDSHAKE_SKEW,
) -> FederationPeer:
    """:func:`accept_envelope` over synchronous stores (which never suspend)."""
    return run_sync(
        accept_envelope(
            obj,
            kernel_id=kernel_id,
            now=now,
            anchors=anchors,
            peers=SyncPeerStoreAsAsync(peers),
            nonces=SyncStoreAsAsync(nonces),
            rotation_window=rotation_window,
            max_skew=max_skew,
        )
    )
