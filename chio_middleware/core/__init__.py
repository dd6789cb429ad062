"""The framework-free core of chio_middleware: the Chio wire contract in Python.

Imports only the standard library, pydantic and PyNaCl (a test pins this). Sections of
``PROTOCOL.md`` map onto modules: 1.1 :mod:`.canonical`, 1.2 :mod:`.crypto`, 1.3
:mod:`.encoding`, 2 :mod:`.capability`, 3 :mod:`.dpop`, 4 :mod:`.nonce`, 5 :mod:`.grants`,
6 :mod:`.hashing`, 7 :mod:`.receipts`, 7.2 :mod:`.core_receipts`, 8 :mod:`.errors`, 9
:mod:`.federation` and :mod:`.federation_trust`; replay state in :mod:`.replay`.
"""

from __future__ import annotations

from .canonical import CanonicalJsonError, JsonParseError, canonical_json, parse_json
from .capability import (
    CapabilityVerifier,
    parse_capability,
    verify_capability_signature,
    verify_delegation_chain,
)
from .clock import Clock, FixedClock, system_clock, uuid7
from .crypto import PublicKey, SigningKey, sha256_hex
from .dpop import DpopBinding, create_dpop_proof, verify_dpop_proof
from .encoding import decode_header_object, encode_header_object
from .errors import ChioError
from .grants import GrantMatch, match_grant
from .hashing import body_hash, caller_identity_hash, content_hash, request_binding_hash
from .models import (
    CapabilityToken,
    DpopProof,
    GuardEvidence,
    HttpReceipt,
    NonceBinding,
    SignedExecutionNonce,
    Verdict,
)
from .nonce import mint_execution_nonce, verify_execution_nonce
from .receipts import (
    ReceiptInvalid,
    decode_receipt_header,
    encode_receipt_header,
    sign_receipt,
    verify_receipt,
)
from .replay import MemoryReplayStore, ReplayStore

__all__ = [
    "CanonicalJsonError",
    "CapabilityToken",
    "CapabilityVerifier",
    "ChioError",
    "Clock",
    "DpopBinding",
    "DpopProof",
    "FixedClock",
    "GrantMatch",
    "GuardEvidence",
    "HttpReceipt",
    "JsonParseError",
    "MemoryReplayStore",
    "NonceBinding",
    "PublicKey",
    "ReceiptInvalid",
    "ReplayStore",
    "SignedExecutionNonce",
    "SigningKey",
    "Verdict",
    "body_hash",
    "caller_identity_hash",
    "canonical_json",
    "content_hash",
    "create_dpop_proof",
    "decode_header_object",
    "decode_receipt_header",
    "encode_header_object",
    "encode_receipt_header",
    "match_grant",
    "mint_execution_nonce",
    "parse_capability",
    "parse_json",
    "request_binding_hash",
    "sha256_hex",
    "sign_receipt",
    "system_clock",
    "uuid7",
    "verify_capability_signature",
    "verify_delegation_chain",
    "verify_dpop_proof",
    "verify_execution_nonce",
    "verify_receipt",
]
