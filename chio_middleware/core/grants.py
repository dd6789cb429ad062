"""Grant matching (PROTOCOL.md 5), with the reference's specificity order.

A grant matches a tool when ``server_id`` and ``tool_name`` are equal or ``"*"``, its
operations contain ``invoke``, it carries no restriction the middleware cannot enforce
(``restrictions.py``), and every constraint holds on the request's arguments
(``constraints.py``: what each constraint applies to). Among matching grants the most
specific wins: exact server, then exact tool, then more constraints, then the earlier
grant. A call no grant matches is denied naming the tool, or the first failure of the most
specific grant that would otherwise have matched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .constraints import (
    SUPPORTED_CONSTRAINTS,
    ArgumentLeaves,
    Leaf,
    check_constraint,
    constraint_holds,
    is_path_like_leaf,
    normalise_path,
    scalar_leaves,
    string_leaves,
)
from .errors import MAX_ECHO_CHARS, AccessDenied, bounded
from .models import CapabilityToken, ToolGrant
from .restrictions import grant_refusal, unenforceable_grant_members

__all__ = [
    "SUPPORTED_CONSTRAINTS",
    "GrantMatch",
    "Leaf",
    "constraint_holds",
    "is_path_like_leaf",
    "match_grant",
    "normalise_path",
    "scalar_leaves",
    "string_leaves",
]


@dataclass(frozen=True, slots=True)
class GrantMatch:
    """The grant that authorises a call, its index in the scope, and whether DPoP is due."""

    grant: ToolGrant
    index: int
    dpop_required: bool


def _first_failure(grant: ToolGrant, leaves: ArgumentLeaves) -> str | None:
    unenforceable = unenforceable_grant_members(grant)
    if unenforceable:
        return grant_refusal(unenforceable)
    for constraint in grant.constraints or ():
        failure = check_constraint(constraint, leaves)
        if failure is not None:
            kind = bounded(constraint.type, MAX_ECHO_CHARS)
            return (
                f"request arguments do not satisfy the grant's {kind} constraint: {failure.reason}"
            )
    return None


def match_grant(
    token: CapabilityToken, *, server: str, tool: str, arguments: Mapping[str, Any]
) -> GrantMatch:
    """Pick the most specific grant of ``token`` for ``server``/``tool`` that holds.

    Raises ``AccessDenied`` (guard ``ConstraintGuard`` when a grant for the tool exists)
    naming the tool, or the first failure of the most specific candidate grant.
    """
    candidates: list[tuple[tuple[int, int, int], int, ToolGrant]] = []
    for index, grant in enumerate(token.tool_grants):
        if grant.server_id not in ("*", server) or grant.tool_name not in ("*", tool):
            continue
        if "invoke" not in grant.operations:
            continue
        specificity = (
            int(grant.server_id == server),
            int(grant.tool_name == tool),
            len(grant.constraints or ()),
        )
        candidates.append((specificity, index, grant))
    if not candidates:
        raise AccessDenied(
            f"capability does not authorize tool {bounded(tool, MAX_ECHO_CHARS)} "
            f"on server {bounded(server, MAX_ECHO_CHARS)}"
        )
    candidates.sort(key=lambda item: (-item[0][0], -item[0][1], -item[0][2], item[1]))
    leaves = ArgumentLeaves(arguments)
    matching: list[tuple[int, ToolGrant]] = []
    first_failure: str | None = None
    for _, index, grant in candidates:
        failure = _first_failure(grant, leaves)
        if failure is None:
            matching.append((index, grant))
        elif first_failure is None:
            first_failure = failure
    if not matching:
        assert first_failure is not None
        raise AccessDenied(first_failure, guard="ConstraintGuard")
    index, grant = matching[0]
    dpop = any(g.dpop_required for _, g in matching)
    return GrantMatch(grant=grant, index=index, dpop_required=dpop)
