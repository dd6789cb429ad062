"""The fast paths of issue 13 give exactly what the paths they replace gave.

uuid7's string form, one encoding for both request hashes, the receipts' verdict and evidence wire forms built without pydantic's
serializer, the decision log line at DEBUG, and the bounded in-memory sink.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from chio_middleware import _speedups
from chio_middleware.core import clock, dpop
from chio_middleware.core.canonical import canonical_json, canonical_json_exact
from chio_middleware.core.clock import uuid7, uuid7_pair
from chio_middleware.core.crypto import sha256_hex
from chio_middleware.core.dpop import DpopBinding, create_dpop_proof, parse_dpop_proof
from chio_middleware.core.hashing import (
    binding_json,
    content_hash,
    content_hash_from_binding,
    request_binding_hash,
)
from chio_middleware.core.models import GuardEvidence, HttpReceipt, Verdict
from chio_middleware.core.receipts import (
    evidence_wire,
    receipt_json,
    sign_receipt,
    verdict_wire,
    verify_receipt,
)
from chio_middleware.sinks import MemorySink
from tests.middleware.harness import KERNEL, agent_headers, make_driver

NOTE = b'{"title":"t","body":"b"}'

MS = st.integers(min_value=0, max_value=2**48 - 1)


@given(MS)
def test_uuid7_is_a_canonical_version_7_rfc_9562_uuid_of_its_millisecond(ms: int) -> None:
    text = uuid7(ms)
    parsed = uuid.UUID(text)
    assert str(parsed) == text  # lowercase 8-4-4-4-12, as str(UUID) writes it
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert parsed.int >> 80 == ms


def test_uuid7_ids_of_one_millisecond_increase() -> None:
    ids = [uuid7(1_760_000_000_000) for _ in range(50)]
    assert [uuid.UUID(i).int for i in ids] == sorted({uuid.UUID(i).int for i in ids})


@given(MS, st.sampled_from([None, 0, 1, 2**62 - 1, 2**62, 2**74 - 2, 2**74 - 1]), st.booleans())
def test_uuid7_pair_is_two_successive_uuid7_ids(ms: int, last_rand: int | None, same_ms: bool) -> None:
    """From the same state, the pair is what two calls give, and leaves the same state."""
    state = (ms if same_ms else ms - 1, last_rand if last_rand is not None else 12345)
    clock._last_ms, clock._last_rand = state
    one_by_one = (uuid7(ms), uuid7(ms))
    after = (clock._last_ms, clock._last_rand)
    clock._last_ms, clock._last_rand = state
    if not same_ms:  # a new millisecond draws fresh random bits: compare their shape only
        pair = uuid7_pair(ms)
        first, second = (uuid.UUID(i).int for i in pair)
        assert second == first + 1 or (first & (2**62 - 1)) == 2**62 - 1  # rand_b carried
        assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).int >> 80 == ms for i in pair)
        return
    assert uuid7_pair(ms) == one_by_one
    assert (clock._last_ms, clock._last_rand) == after


TEXT = st.text(max_size=20)


@given(
    st.sampled_from(["allow", "deny"]),
    st.none() | TEXT,
    st.none() | TEXT,
    st.none() | st.integers(min_value=100, max_value=599),
)
def test_verdict_wire_is_the_models_wire_form(
    verdict: str, reason: str | None, guard: str | None, status: int | None
) -> None:
    model = Verdict(verdict=verdict, reason=reason, guard=guard, http_status=status)  # type: ignore[arg-type]
    assert verdict_wire(model) == model.to_wire()


@given(TEXT, st.booleans(), st.none() | TEXT)
def test_evidence_wire_is_the_models_wire_form(name: str, verdict: bool, details: str | None) -> None:
    model = GuardEvidence(guard_name=name, verdict=verdict, details=details)
    assert evidence_wire(model) == model.to_wire()


def test_a_receipt_signed_with_the_fast_wire_forms_verifies_and_is_its_canonical_json() -> None:
    receipt = sign_receipt(
        KERNEL,
        request_id="r",
        route_pattern="/notes",
        method="post",
        caller_identity_hash="00" * 32,
        verdict=Verdict.deny("no", "DpopGuard", 401),
        evidence=[GuardEvidence(guard_name="CapabilityGuard", verdict=True, details="ok"),
                  GuardEvidence(guard_name="DpopGuard", verdict=False)],
        response_status=401,
        timestamp=1,
        content_hash="11" * 32,
        policy_hash="22" * 32,
    )
    assert verify_receipt(receipt, trusted_keys=[KERNEL.public_key]) == receipt
    assert receipt_json(receipt) == canonical_json(receipt.to_wire())


@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
def test_the_decision_line_is_logged_at_debug_only(
    adapter: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server started in process earlier in the session (logging.config with
    # disable_existing_loggers) may have disabled the library's logger: undo that here.
    monkeypatch.setattr(logging.getLogger("chio_middleware"), "disabled", False)
    # structlog.testing.capture_logs leaves structlog "configured" once it has run: the
    # library then logs through structlog, which caplog does not see.
    structlog.reset_defaults()
    driver = make_driver(adapter)
    with caplog.at_level(logging.INFO, logger="chio_middleware"):
        assert driver.request("POST", "/notes", agent_headers("POST", "/notes", NOTE), NOTE).status == 201
    assert not [r for r in caplog.records if getattr(r, "chio_event", None) == "chio_decision"]
    with caplog.at_level(logging.DEBUG, logger="chio_middleware"):
        assert driver.request("POST", "/notes", agent_headers("POST", "/notes", NOTE), NOTE).status == 201
        assert driver.request("POST", "/notes", {}, NOTE).status == 401
    decisions = [r for r in caplog.records if getattr(r, "chio_event", None) == "chio_decision"]
    assert [r.levelno for r in decisions] == [logging.DEBUG, logging.DEBUG]
    assert [r.chio_context["verdict"] for r in decisions] == ["allow", "deny"]  # type: ignore[attr-defined]
    assert driver.sink.receipts[-1].id == decisions[-1].chio_context["receipt_id"]  # type: ignore[attr-defined]


def test_the_memory_sink_keeps_at_most_its_bound_and_always_the_latest() -> None:
    sink = MemorySink(max_receipts=4)
    receipts = []
    for index in range(11):
        receipts.append(sink.record(lambda extra, i=index: _receipt(i)))
        assert len(sink.receipts) <= 4
        assert sink.receipts[-1] is receipts[-1]
    assert sink.dropped + len(sink.receipts) == 11
    assert sink.receipts == receipts[-len(sink.receipts):]
    with pytest.raises(ValueError, match="max_receipts"):
        MemorySink(max_receipts=0)


def _signed(**members: Any) -> HttpReceipt:
    """A receipt of an allowed GET, with ``members`` in place of the defaults."""
    defaults: dict[str, Any] = {
        "request_id": "r",
        "route_pattern": "/",
        "method": "GET",
        "caller_identity_hash": "00" * 32,
        "verdict": Verdict.allow(),
        "response_status": 200,
        "timestamp": 1,
        "content_hash": "11" * 32,
        "policy_hash": "22" * 32,
    }
    return sign_receipt(KERNEL, **{**defaults, **members})


def _receipt(index: int) -> HttpReceipt:
    return _signed(request_id=f"r{index}", timestamp=index)


@given(
    st.sampled_from(["GET", "post", "DELETE"]),
    st.text(max_size=30),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
    st.none() | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    st.text(max_size=30),
)
def test_one_encoding_gives_both_request_hashes(
    method: str, path: str, query: dict[str, str], digest: str | None, pattern: str
) -> None:
    encoded = binding_json(method, path, query, digest)
    assert encoded == canonical_json_exact(
        {"body_hash": digest, "method": method.upper(), "path": path, "query": query}
    )
    assert sha256_hex(encoded) == request_binding_hash(method, path, query, digest)
    assert content_hash_from_binding(encoded, pattern) == content_hash(
        method, path, query, digest, pattern
    )


# Metadata as sinks and the engine give it, and beyond the fast domain (floats, non-ASCII
# and astral keys), so that both encoders of a receipt body are exercised.
METADATA = st.none() | st.dictionaries(
    st.text(max_size=6),
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | TEXT
    | st.floats(allow_nan=False, allow_infinity=False),
    max_size=4,
)
EVIDENCE = st.lists(
    st.builds(GuardEvidence, guard_name=TEXT, verdict=st.booleans(), details=st.none() | TEXT),
    max_size=4,
)


@given(
    st.sampled_from([Verdict.allow(), Verdict.deny("no \u2028 \U0001f600", "DpopGuard", 401)]),
    EVIDENCE,
    METADATA,
    st.none() | TEXT,
    st.none() | TEXT,
    TEXT,
    st.integers(min_value=100, max_value=599),
    st.integers(min_value=0, max_value=2**64 - 1),
)
def test_a_fast_built_receipt_is_the_one_pydantic_would_build(
    verdict: Verdict,
    evidence: list[GuardEvidence],
    metadata: dict[str, object] | None,
    capability_id: str | None,
    session_id: str | None,
    route_pattern: str,
    status: int,
    timestamp: int,
) -> None:
    assert _speedups.install()  # the body's fast encoder is orjson, as the runtime has it
    receipt = sign_receipt(
        KERNEL,
        receipt_id="0192e0b4-0000-7000-8000-000000000000",
        request_id="r",
        route_pattern=route_pattern,
        method="post",
        caller_identity_hash="00" * 32,
        verdict=verdict,
        evidence=evidence,
        response_status=status,
        timestamp=timestamp,
        content_hash="11" * 32,
        policy_hash="22" * 32,
        capability_id=capability_id,
        session_id=session_id,
        metadata=metadata,
    )
    fields = {name: getattr(receipt, name) for name in HttpReceipt.model_fields}
    reference = HttpReceipt.model_construct(**fields)
    for slot in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__"):
        assert getattr(receipt, slot) == getattr(reference, slot)
    assert receipt.__pydantic_private__.keys() == reference.__pydantic_private__.keys()  # type: ignore[union-attr]
    # The signed bytes are the exact RFC 8785 encoding of the wire form, whichever encoder
    # the body took, and the receipt validates and verifies as a parsed one would.
    assert receipt_json(receipt) == canonical_json_exact(receipt.to_wire())
    assert HttpReceipt.model_validate(receipt.to_wire()) == receipt
    # (Parsed back, an integral float is an int: compare the bytes.)
    parsed = verify_receipt(receipt_json(receipt), trusted_keys=[KERNEL.public_key])
    assert canonical_json_exact(parsed.to_wire()) == receipt_json(receipt)


@given(
    st.text(max_size=12),
    st.text(max_size=12),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.booleans(),
)
def test_a_parsed_proofs_signed_bytes_are_its_wire_forms(
    tool: str, nonce: str, issued_at: int, by_field_name: bool
) -> None:
    proof = create_dpop_proof(
        KERNEL, binding=DpopBinding("cap", "srv", tool, "00" * 32), issued_at=issued_at, nonce=nonce
    )
    wire = proof.to_wire()
    if by_field_name:  # pydantic also takes the field's own name: its wire name is signed
        wire["body"]["schema_"] = wire["body"].pop("schema")
    parsed = parse_dpop_proof(wire)
    expected = canonical_json_exact(proof.body.to_wire())
    assert dpop._signed_bytes(parsed) == expected
    KERNEL.public_key.verify(dpop._signed_bytes(parsed), parsed.signature)


# -- what an outside review of these fast paths tried (each fails closed or encodes exactly)


def test_a_copied_proof_with_another_body_is_checked_against_its_own_bytes() -> None:
    from chio_middleware.core.dpop import check_dpop_proof
    from chio_middleware.core.errors import DpopInvalid

    signed_for = DpopBinding("cap-1", "srv", "tool", "aa" * 32)
    parsed = parse_dpop_proof(create_dpop_proof(KERNEL, binding=signed_for, issued_at=1000).to_wire())
    other = DpopBinding("cap-1", "srv", "delete_everything", "bb" * 32)
    forged = parsed.model_copy(
        update={
            "body": parsed.body.model_copy(
                update={"tool_name": other.tool_name, "action_hash": other.action_hash}
            )
        }
    )
    with pytest.raises(DpopInvalid) as refused:
        check_dpop_proof(forged, subject=KERNEL.public_key.hex, expected=other, now=1000)
    assert refused.value.step == "signature"
    # The original still verifies, with its cached bytes.
    check_dpop_proof(parsed, subject=KERNEL.public_key.hex, expected=signed_for, now=1000)


def test_a_proof_body_that_cannot_be_encoded_is_malformed() -> None:
    from chio_middleware.core.errors import DpopInvalid

    wire = create_dpop_proof(
        KERNEL, binding=DpopBinding("cap", "srv", "tool", "00" * 32), issued_at=1
    ).to_wire()
    wire["body"]["nonce"] = "\ud800"  # only Python can hand this over: parse_json refuses it
    with pytest.raises(DpopInvalid) as refused:
        parse_dpop_proof(wire)
    assert refused.value.step == "malformed"


def test_a_copied_receipt_is_encoded_afresh() -> None:
    receipt = _receipt(1)
    copy = receipt.model_copy(update={"response_status": 500})
    assert receipt_json(copy) == canonical_json_exact(copy.to_wire()) != receipt_json(receipt)
    assert receipt_json(receipt) == canonical_json_exact(receipt.to_wire())


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
def test_evidence_built_without_validation_takes_the_exact_encoder() -> None:
    odd = [
        GuardEvidence.model_construct(guard_name=1.0, verdict=True),  # type: ignore[arg-type]
        GuardEvidence.model_construct(guard_name="g", verdict=1.0),  # type: ignore[arg-type]
    ]
    receipt = _signed(evidence=odd)
    assert receipt_json(receipt) == canonical_json_exact(receipt.to_wire())


def test_the_binding_encodes_what_it_checked() -> None:
    class Weird(dict):  # type: ignore[type-arg]
        def items(self):  # type: ignore[no-untyped-def, override]
            return [("x", "1")]

    query = Weird({"x": 1.0})
    assert binding_json("GET", "/", query, None) == canonical_json_exact(
        {"body_hash": None, "method": "GET", "path": "/", "query": {"x": 1.0}}
    )


class _PosingAsStr(type):
    """A metaclass whose classes compare and hash equal to ``str`` (found by the review)."""

    def __eq__(cls, other: object) -> bool:
        return other is str

    def __hash__(cls) -> int:
        return hash(str)


class _FloatPosingAsStr(float, metaclass=_PosingAsStr):
    pass


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
@pytest.mark.parametrize("value", [1.0, _FloatPosingAsStr(1.0)], ids=["float", "float-posing-as-str"])
@pytest.mark.parametrize(
    "member",
    ["receipt_id", "request_id", "route_pattern", "caller_identity_hash", "content_hash", "policy_hash"],
)
def test_a_string_member_of_another_type_takes_the_exact_encoder(member: str, value: float) -> None:
    """A Python caller's float where a string belongs: orjson would write ``1.0``, RFC 8785
    writes ``1``; the receipt's bytes must be the exact encoding whatever it was given.
    (``method`` is upper-cased and ``kernel_key`` comes from the key: both are always str.)"""
    assert _speedups.install()
    receipt = _signed(**{"receipt_id": "0192e0b4-0000-7000-8000-000000000000", member: value})
    assert receipt_json(receipt) == canonical_json_exact(receipt.to_wire())


_BOM = b"\xef\xbb\xbf"


@given(st.sampled_from([b"", _BOM, _BOM + _BOM, _BOM[:2], b"\xef"]), st.binary(max_size=12))
def test_the_guard_reads_a_body_as_the_utf_8_sig_codec_does(prefix: bytes, rest: bytes) -> None:
    from chio_middleware.core.guards import _utf8_sig

    body = prefix + rest
    assert _utf8_sig(body) == body.decode("utf-8-sig", "replace")


@given(st.text(alphabet=st.sampled_from("ab%+2 0F\u00e9\ufeff"), max_size=12) | st.text(max_size=12))
def test_a_text_without_percent_or_plus_is_its_own_unquote_plus(text: str) -> None:
    """What lets SecretLeakGuard skip unquote_plus for such texts."""
    import urllib.parse

    if "%" not in text and "+" not in text:
        assert urllib.parse.unquote_plus(text) == text


class _AwaitableStr(str):
    """A detail that is a str subclass and awaitable: it must still be awaited."""

    def __await__(self) -> Any:
        async def detail() -> str:
            return "awaited detail"

        return detail().__await__()


def test_a_guards_outcome_is_awaited_unless_it_is_none_or_a_plain_str() -> None:
    import asyncio
    from types import SimpleNamespace

    from chio_middleware.core.engine import ChioEngine

    class Returning:
        name = "ReturningGuard"

        def __init__(self, outcome: Any) -> None:
            self.outcome = outcome

        def check(self, context: Any) -> Any:
            return self.outcome

    engine = ChioEngine.__new__(ChioEngine)  # _run_guards reads nothing of the engine
    cases = [(None, None), ("detail", "detail"), (_AwaitableStr("x"), "awaited detail")]
    for outcome, expected in cases:
        ev = SimpleNamespace(evidence=[], failure=None)
        asyncio.run(engine._run_guards(ev, None, [Returning(outcome)]))  # type: ignore[arg-type]
        (evidence,) = ev.evidence
        assert evidence.details == expected


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=64), st.integers(min_value=0, max_value=63))
def test_ed25519_through_the_bindings_is_pynacls_signing_key_and_verify_key(
    seed: bytes, message: bytes, flip: int
) -> None:
    """The keys call libsodium through PyNaCl's bindings: the same signatures as
    ``nacl.signing.SigningKey.sign``, and a signature with one bit changed is refused."""
    import nacl.signing

    from chio_middleware.core.crypto import SignatureInvalid, SigningKey

    key = SigningKey(seed)
    signature = key.sign(message)
    assert signature == nacl.signing.SigningKey(seed).sign(message).signature.hex()
    key.public_key.verify(message, signature)
    raw = bytearray(bytes.fromhex(signature))
    raw[flip] ^= 1
    with pytest.raises(SignatureInvalid):
        key.public_key.verify(message, raw.hex())
    with pytest.raises(SignatureInvalid):
        key.public_key.verify(message + b"!", signature)
