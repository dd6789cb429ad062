from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chio_middleware.core.crypto import (
    KeyFormatError,
    PublicKey,
    SignatureInvalid,
    SigningKey,
    UnsupportedKeyType,
    sha256_hex,
)

SEED = "0b" * 32
ISSUER_PUB = "66be7e332c7a453332bd9d0a7f7db055f5c5ef1a06ada66d98b39fb6810c473a"


def test_seed_gives_the_vector_public_key() -> None:
    key = SigningKey.from_seed_hex(SEED)
    assert key.public_key.hex == ISSUER_PUB
    assert SigningKey.from_seed_hex("0x" + SEED).public_key.hex == ISSUER_PUB


def test_keys_compare_as_bytes_not_strings() -> None:
    assert PublicKey.from_hex(ISSUER_PUB) == PublicKey.from_hex("0x" + ISSUER_PUB.upper())
    assert PublicKey.from_hex(ISSUER_PUB).hex == ISSUER_PUB
    assert len({PublicKey.from_hex(ISSUER_PUB), PublicKey.from_hex(ISSUER_PUB.upper())}) == 1


@pytest.mark.parametrize("prefix", ["p256:", "p384:", "hybrid:", "P256:"])
def test_foreign_key_types_are_refused_clearly(prefix: str) -> None:
    with pytest.raises(UnsupportedKeyType, match="only Ed25519"):
        PublicKey.from_hex(prefix + "ab" * 33)


@pytest.mark.parametrize("bad", ["", "ab", "zz" * 32, "ab" * 31 + " a", "ab" * 33, " " + "ab" * 32])
def test_malformed_keys(bad: str) -> None:
    with pytest.raises(KeyFormatError):
        PublicKey.from_hex(bad)


def test_sign_verify_and_rejections() -> None:
    key = SigningKey.from_seed_hex(SEED)
    signature = key.sign(b"message")
    assert len(signature) == 128 and signature == signature.lower()
    key.public_key.verify(b"message", signature)
    key.public_key.verify(b"message", "0x" + signature)
    with pytest.raises(SignatureInvalid):
        key.public_key.verify(b"messagE", signature)
    with pytest.raises(SignatureInvalid):
        key.public_key.verify(b"message", "00" * 64)
    with pytest.raises(SignatureInvalid):
        key.public_key.verify(b"message", signature[:-2])
    with pytest.raises(UnsupportedKeyType):
        key.public_key.verify(b"message", "p256:" + signature)


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=63), st.integers(1, 255))
def test_flipping_any_signature_byte_is_rejected(message: bytes, index: int, flip: int) -> None:
    key = SigningKey.from_seed_hex(SEED)
    raw = bytearray(bytes.fromhex(key.sign(message)))
    raw[index] ^= flip
    with pytest.raises(SignatureInvalid):
        key.public_key.verify(message, raw.hex())


def test_sha256_hex() -> None:
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_signing_key_repr_does_not_leak_the_seed() -> None:
    key = SigningKey.from_seed_hex(SEED)
    assert SEED not in repr(key) and ISSUER_PUB in repr(key)


def test_signature_hex_must_be_lowercase() -> None:
    key = SigningKey.from_seed_hex(SEED)
    signature = key.sign(b"m")
    with pytest.raises(SignatureInvalid, match="lowercase"):
        key.public_key.verify(b"m", signature.upper())


def test_uppercase_in_the_first_signature_characters_is_refused() -> None:
    key = SigningKey.from_seed_hex(SEED)
    for message in (bytes([i]) for i in range(64)):
        signature = key.sign(message)
        if signature[0] in "abcdef":
            with pytest.raises(SignatureInvalid):
                key.public_key.verify(message, signature[0].upper() + signature[1:])
            return
    raise AssertionError("no signature starting with a letter in 64 tries")
