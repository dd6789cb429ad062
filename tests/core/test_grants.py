from __future__ import annotations

import pytest

from chio_middleware.core.errors import AccessDenied
from chio_middleware.core.grants import constraint_holds, match_grant
from chio_middleware.core.models import CapabilityToken, Constraint


def c(kind: str, value: object = None) -> Constraint:
    return Constraint(type=kind, value=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arguments", "ok"),
    [
        ({"path": "/workspace/safe/report.txt"}, True),
        ({"path": "/workspace/safe"}, True),
        ({"path": "/workspace/safe/../secret.txt"}, False),
        ({"path": "/workspace/safeX/report.txt"}, False),
        ({"path": "/../workspace/safe/x"}, False),
        ({"file": "relative/x"}, False),
        ({"title": "no paths here"}, False),
        ({"note": "/etc/passwd"}, False),
        ({"a": {"b": ["/workspace/safe/1", "/workspace/safe/2"]}}, True),
        ({"a": ["/workspace/safe/1", "/tmp/2"]}, False),
        ({"path": "/workspace/safe/x", "url": "https://a/b"}, True),
    ],
)
def test_path_prefix(arguments: dict, ok: bool) -> None:
    assert constraint_holds(c("path_prefix", "/workspace/safe/"), arguments) is ok


@pytest.mark.parametrize(
    ("arguments", "exact", "glob"),
    [
        ({"url": "https://API.example.com:8443/x?y#z"}, True, True),
        ({"url": "https://user@api.example.com/"}, True, True),
        ({"url": "https://example.com/"}, False, False),
        ({"url": "https://a.b.example.com/"}, False, True),
        ({"url": "https://api.example.com/", "file": "report.txt"}, False, False),
        ({"title": "nothing"}, False, False),
        ({"host": "localhost"}, False, False),
    ],
)
def test_domains(arguments: dict, exact: bool, glob: bool) -> None:
    assert constraint_holds(c("domain_exact", "api.example.com"), arguments) is exact
    assert constraint_holds(c("domain_glob", "*.example.com"), arguments) is glob


def test_regex_max_length_max_args_size() -> None:
    assert constraint_holds(c("regex_match", "^ab+"), {"x": "zz", "y": "abbb"})
    assert not constraint_holds(c("regex_match", "^ab+"), {"x": "zz"})
    assert not constraint_holds(c("regex_match", "("), {"x": "("})
    assert constraint_holds(c("max_length", 4), {"x": "é" * 2, "n": 12345})
    assert not constraint_holds(c("max_length", 3), {"x": "é" * 2})
    assert constraint_holds(c("max_args_size", 10), {"a": "é"})  # {"a":"é"}: 10 UTF-8 bytes
    assert not constraint_holds(c("max_args_size", 9), {"a": "é"})
    assert not constraint_holds(c("max_length", "3"), {"x": "a"})


@pytest.mark.parametrize("kind", ["governed_intent_required", "custom", "table_allowlist", "weird"])
def test_other_constraint_types_deny(kind: str) -> None:
    assert not constraint_holds(c(kind, ["a", "b"]), {"a": "b"})


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
    assert info.value.status == 403


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
