"""Hashes, Ed25519 keys and signatures (PROTOCOL.md 1.2), on PyNaCl.

Keys and signatures travel as lowercase hex; a leading ``0x`` is tolerated on input and
keys are compared as decoded bytes. Only Ed25519 is supported: the reference's other key
types (``p256:``, ``p384:``, ``hybrid:``) are refused with :class:`UnsupportedKeyType`.
"""

from __future__ import annotations

import binascii
import hashlib
from functools import lru_cache

import nacl.bindings
import nacl.exceptions
import nacl.signing

__all__ = [
    "KeyFormatError",
    "PublicKey",
    "SignatureInvalid",
    "SigningKey",
    "UnsupportedKeyType",
    "decode_hex",
    "sha256_hex",
]

_FOREIGN_KEY_PREFIXES = ("p256:", "p384:", "hybrid:")


class KeyFormatError(ValueError):
    """A key or signature is not well-formed hex of the right length."""


class UnsupportedKeyType(KeyFormatError):
    """A key or signature of a type other than Ed25519 (``p256:``, ``p384:``, ``hybrid:``)."""


class SignatureInvalid(ValueError):
    """A signature does not verify under the given key."""


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of ``data`` (64 characters)."""
    return hashlib.sha256(data).hexdigest()


def decode_hex(value: str, *, length: int, what: str) -> bytes:
    """Decode strict hex of exactly ``length`` bytes; a leading ``0x`` is allowed."""
    if not isinstance(value, str):
        raise KeyFormatError(f"{what} must be a hex string")
    lowered = value[:8].lower()
    for prefix in _FOREIGN_KEY_PREFIXES:
        if lowered.startswith(prefix):
            raise UnsupportedKeyType(
                f"{what} uses key type {prefix[:-1]!r}; only Ed25519 is supported"
            )
    text = value[2:] if value[:2] in ("0x", "0X") else value
    if len(text) != 2 * length:
        raise KeyFormatError(f"{what} must be {2 * length} hex characters, got {len(text)}")
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise KeyFormatError(f"{what} is not valid hex") from None


_sign = nacl.bindings.crypto_sign
_sign_open = nacl.bindings.crypto_sign_open
_SIGNATURE_BYTES = nacl.bindings.crypto_sign_BYTES


class PublicKey:
    """An Ed25519 public key; equal to another when the 32 raw bytes are equal."""

    __slots__ = ("_hex", "_raw")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise KeyFormatError("an Ed25519 public key is 32 bytes")
        self._raw = bytes(raw)
        self._hex = self._raw.hex()

    @classmethod
    def from_hex(cls, value: str) -> PublicKey:
        """Parse a public key from hex (64 characters, optional ``0x``)."""
        return _public_key_from_hex(value)

    @property
    def raw(self) -> bytes:
        """The 32 raw key bytes."""
        return self._raw

    @property
    def hex(self) -> str:
        """Lowercase hex of the key, the form Chio emits."""
        return self._hex

    def verify(self, message: bytes, signature_hex: str) -> None:
        """Raise :class:`SignatureInvalid` unless ``signature_hex`` signs ``message``."""
        try:
            signature = decode_hex(signature_hex, length=64, what="signature")
        except UnsupportedKeyType:
            raise
        except KeyFormatError as exc:
            raise SignatureInvalid(str(exc)) from None
        digits = signature_hex[2:] if signature_hex[:2] in ("0x", "0X") else signature_hex
        if digits != digits.lower():
            # Signatures are emitted lowercase; accepting other spellings of the same bytes
            # would let a signed object change on the wire and still verify.
            raise SignatureInvalid("signature hex must be lowercase")
        try:
            # libsodium's check through PyNaCl's binding, as ``VerifyKey.verify`` makes it,
            # without that method's encoder and argument handling (a request's Python work).
            _sign_open(signature + message, self._raw)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
            raise SignatureInvalid("signature does not verify") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"PublicKey({self._hex!r})"


@lru_cache(maxsize=4096)
def _public_key_from_hex(value: str) -> PublicKey:
    # Keys repeat on every request (issuers, agents): parse each distinct string once.
    return PublicKey(decode_hex(value, length=32, what="public key"))


class SigningKey:
    """An Ed25519 private key from a 32-byte RFC 8032 seed. Never logged or printed."""

    __slots__ = ("_public", "_secret")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise KeyFormatError("an Ed25519 seed is 32 bytes")
        public, secret = nacl.bindings.crypto_sign_seed_keypair(bytes(seed))
        self._public = PublicKey(public)
        #: libsodium's 64-byte secret key: the seed, then the public key.
        self._secret = secret

    @classmethod
    def from_seed_hex(cls, value: str) -> SigningKey:
        """Parse a seed from hex (64 characters, optional ``0x``)."""
        return cls(decode_hex(value.strip(), length=32, what="signing key seed"))

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh random key."""
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def public_key(self) -> PublicKey:
        """The matching public key."""
        return self._public

    def seed_hex(self) -> str:
        """The seed as hex, for writing a key file. Handle as a secret."""
        return self._secret[:32].hex()

    def sign(self, message: bytes) -> str:
        """Sign ``message``; return the 64-byte signature as lowercase hex."""
        # ``SigningKey.sign`` without its encoders and ``SignedMessage`` (the signature is
        # the first 64 bytes of libsodium's signed message).
        return _sign(message, self._secret)[:_SIGNATURE_BYTES].hex()

    def __repr__(self) -> str:
        return f"SigningKey(public={self._public.hex!r})"
