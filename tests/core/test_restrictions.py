"""Token-level restrictions (PROTOCOL.md 2): enforced, or the token is refused."""

from __future__ import annotations

from typing import Any

import pytest

from chio_middleware.core.capability import (
    parse_capability,
    sign_capability,
    verify_capability_signature,
)
from chio_middleware.core.crypto import SigningKey
from chio_middleware.core.errors import CapabilityInvalid
from chio_middleware.core.models import CapabilityToken
from chio_middleware.core.restrictions import check_token_restrictions
from tests.vectors import cases

BASE: dict[str, Any] = {
    "id": "cap",
    "issuer": "00" * 32,
    "subject": "00" * 32,
    "scope": {"grants": [{"server_id": "s", "tool_name": "t", "operations": ["invoke"]}]},
    "issued_at": 0,
    "expires_at": 10,
    "signature": "00" * 64,
}


def token(**members: Any) -> CapabilityToken:
    return CapabilityToken.model_validate({**BASE, **members})


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("caveats", [{"type": "time_window", "not_after": 5}]),
        ("scope_attenuations", [{"type": "shorten_expiry", "new_expires_at": 5}]),
        ("attenuation_proof", {"steps": []}),
        ("budget_share_bps", 5000),
        ("budget_share_bps", 10000),
        ("aggregate_invocation_budget", {"max_invocations": 3}),
        ("future_restriction", {"x": 1}),
        ("note", None),
    ],
)
def test_a_token_with_a_restriction_the_middleware_cannot_enforce_is_refused(
    member: str, value: Any
) -> None:
    with pytest.raises(CapabilityInvalid) as info:
        check_token_restrictions(token(**{member: value}))
    assert info.value.reason == "unenforceable_restriction" and info.value.status == 401
    assert repr(member) in info.value.message and "cannot enforce" in info.value.message


def test_an_unknown_scope_member_is_refused() -> None:
    scope = {**BASE["scope"], "tool_allowlist_mode": "strict"}
    with pytest.raises(CapabilityInvalid, match="'tool_allowlist_mode'") as info:
        check_token_restrictions(token(scope=scope))
    assert info.value.reason == "unenforceable_restriction"


@pytest.mark.parametrize(
    "members",
    [
        {},
        {"caveats": []},
        {"scope_attenuations": []},
        {"schema": "chio.capability.v1", "algorithm": "ed25519"},
        {"scope": {"grants": [], "resource_grants": [], "prompt_grants": []}},
    ],
)
def test_tokens_without_restrictions_are_admitted(members: dict) -> None:
    check_token_restrictions(token(**members))


@pytest.mark.parametrize("case", cases("upstream/capability_v1.json"))
def test_upstream_vectors_carry_no_token_level_restriction(case: dict) -> None:
    """Admission is separate from verification: every vector token passes this check."""
    check_token_restrictions(parse_capability(case["capability"]))


def test_signature_verification_is_not_admission() -> None:
    """A token carrying caveats still verifies; it is refused only at admission."""
    issuer = SigningKey.from_seed_hex("07" * 32)
    body = {**BASE, "issuer": issuer.public_key.hex, "caveats": [{"type": "x"}]}
    del body["signature"]
    signed = sign_capability(issuer, body)
    verify_capability_signature(signed)
    with pytest.raises(CapabilityInvalid, match="'caveats'"):
        check_token_restrictions(signed)
