"""Grant matching: specificity, fall-through, and restrictions a grant cannot have enforced."""

from __future__ import annotations

import pytest

from chio_middleware.core.errors import AccessDenied
from chio_middleware.core.grants import constraint_holds, match_grant
from chio_middleware.core.models import CapabilityToken, Constraint
from tests.vectors import cases


def c(kind: str, value: object = None) -> Constraint:
    return Constraint(type=kind, value=value)  # type: ignore[arg-type]


def token(*grants: dict) -> CapabilityToken:
    return CapabilityToken.model_validate(
        {
            "id": "cap",
            "issuer": "00" * 32,
            "subject": "00" * 32,
            "scope": {"grants": list(grants)},
            "issued_at": 0,
            "expires_at": 10,
            "signature": "00" * 64,
        }
    )


def g(server: str, tool: str, ops: list[str] | None = None, **extra: object) -> dict:
    return {"server_id": server, "tool_name": tool, "operations": ops or ["invoke"], **extra}


def test_exact_beats_wildcard_and_order_breaks_ties() -> None:
    t = token(g("*", "*"), g("srv", "*"), g("srv", "tool"), g("srv", "tool"))
    assert match_grant(t, server="srv", tool="tool", arguments={}).index == 2
    assert match_grant(t, server="srv", tool="other", arguments={}).index == 1
    assert match_grant(t, server="x", tool="y", arguments={}).index == 0


def test_more_constraints_are_more_specific_and_failing_ones_fall_through() -> None:
    limited = g("srv", "tool", constraints=[{"type": "max_length", "value": 3}])
    t = token(g("srv", "tool"), limited)
    assert match_grant(t, server="srv", tool="tool", arguments={"a": "abc"}).index == 1
    assert match_grant(t, server="srv", tool="tool", arguments={"a": "abcd"}).index == 0


def test_no_grant_or_failed_constraint_is_access_denied() -> None:
    t = token(g("srv", "tool", ["read_result"]), g("srv", "other"))
    with pytest.raises(AccessDenied, match="does not authorize tool tool on server srv"):
        match_grant(t, server="srv", tool="tool", arguments={})
    t = token(g("srv", "tool", constraints=[{"type": "path_prefix", "value": "/ok/"}]))
    with pytest.raises(AccessDenied, match="path_prefix") as info:
        match_grant(t, server="srv", tool="tool", arguments={"path": "/etc/passwd"})
    assert info.value.status == 403 and info.value.guard == "ConstraintGuard"
    assert "'path' is not under the allowed prefix" in info.value.message


def test_no_prefix_globs_for_tool_names() -> None:
    with pytest.raises(AccessDenied):
        match_grant(token(g("srv", "file_*")), server="srv", tool="file_read", arguments={})


def test_dpop_required_if_any_matching_grant_says_so() -> None:
    t = token(g("srv", "tool"), g("*", "*", dpop_required=True))
    match = match_grant(t, server="srv", tool="tool", arguments={})
    assert match.index == 0 and match.dpop_required
    assert not match_grant(
        token(g("srv", "tool")), server="srv", tool="tool", arguments={}
    ).dpop_required


USD = {"units": 5000, "currency": "USD"}


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("max_cost_per_invocation", USD),
        ("max_total_cost", USD),
        ("max_cost_per_day", USD),  # a member the contract does not define
        ("allowed_hours", [9, 17]),
        ("note", None),  # even a null unknown member: it is not ours to read as absent
    ],
)
def test_a_grant_with_a_restriction_the_middleware_cannot_enforce_does_not_match(
    member: str, value: object
) -> None:
    t = token(g("srv", "tool", **{member: value}))
    with pytest.raises(AccessDenied) as info:
        match_grant(t, server="srv", tool="tool", arguments={})
    assert info.value.status == 403 and info.value.guard == "ConstraintGuard"
    assert repr(member) in info.value.message and "cannot enforce" in info.value.message


def test_a_refused_grant_falls_through_to_one_without_the_restriction() -> None:
    t = token(g("*", "*"), g("srv", "tool", max_total_cost=USD))
    assert match_grant(t, server="srv", tool="tool", arguments={}).index == 0


def test_enforced_grant_members_are_accepted() -> None:
    t = token(g("srv", "tool", max_invocations=3, dpop_required=False, constraints=[]))
    assert match_grant(t, server="srv", tool="tool", arguments={}).index == 0


def test_unknown_constraint_members_and_types_deny() -> None:
    assert constraint_holds(c("max_length", 3), {"a": "abc"})
    loose = Constraint.model_validate({"type": "max_length", "value": 3, "negate": True})
    assert not constraint_holds(loose, {"a": "abc"})
    t = token(g("srv", "tool", constraints=[{"type": "table_allowlist", "value": ["a"]}]))
    with pytest.raises(AccessDenied, match=r"table_allowlist constraint: .*unsupported type"):
        match_grant(t, server="srv", tool="tool", arguments={"a": "a"})


def test_an_re2_compile_error_is_the_evidence() -> None:
    t = token(g("srv", "tool", constraints=[{"type": "regex_match", "value": "(?<=a)b"}]))
    with pytest.raises(AccessDenied) as info:
        match_grant(t, server="srv", tool="tool", arguments={"a": "ab"})
    assert "does not compile under RE2" in info.value.message
    assert "invalid perl operator" in info.value.message


@pytest.mark.parametrize("case", cases("upstream/capability_v1.json"))
def test_upstream_vector_grants_are_enforced_or_refused(case: dict) -> None:
    """The vectors' grants: cost caps and `custom`/`governed_intent_required` never match."""
    capability = CapabilityToken.model_validate(case["capability"])
    for grant in capability.tool_grants:
        refused = (
            grant.max_cost_per_invocation is not None
            or grant.max_total_cost is not None
            or any(
                k.type
                not in (
                    "path_prefix",
                    "domain_glob",
                    "domain_exact",
                    "regex_match",
                    "max_length",
                    "max_args_size",
                )
                for k in grant.constraints or ()
            )
        )
        arguments = {"path": "/workspace/a", "url": "https://docs.chio-protocol.dev/x"}
        try:
            match_grant(
                token(grant.to_wire()),
                server=grant.server_id,
                tool=grant.tool_name,
                arguments=arguments,
            )
        except AccessDenied:
            allowed = False
        else:
            allowed = True
        constraints = {k.type for k in grant.constraints or ()}
        if refused:
            assert not allowed
        elif constraints <= {"path_prefix"}:
            assert allowed
