"""Restrictions a token carries: enforced, or the token or grant is refused (PROTOCOL.md 2).

A capability may say more than "this tool": caps, caveats, budgets, members of newer
issuers. The middleware never ignores one. What it enforces:

- a grant's ``constraints`` (``constraints.py``), ``max_invocations`` (the
  ``InvocationBudgetGuard``, counted in the shared store) and ``dpop_required``.

What it cannot enforce, and so refuses:

- a grant carrying ``max_cost_per_invocation``, ``max_total_cost`` (the middleware meters
  no cost) or a member this contract does not define does not match: with no other grant
  for the tool the call is denied (403) naming the member;
- a token carrying non-empty ``caveats`` or ``scope_attenuations``, an
  ``attenuation_proof``, a ``budget_share_bps``, an ``aggregate_invocation_budget``, a
  member this contract does not define, or a scope member other than ``grants``,
  ``resource_grants`` and ``prompt_grants`` is refused (401 ``chio_capability_invalid``,
  reason ``unenforceable_restriction``) naming the member.

Signature verification is separate (``capability.py``): a token refused here may still
verify, and the upstream vectors keep verifying.
"""

from __future__ import annotations

from .errors import CapabilityInvalid
from .models import CapabilityToken, ToolGrant

__all__ = [
    "ENFORCED_GRANT_MEMBERS",
    "UNENFORCEABLE_GRANT_MEMBERS",
    "UNENFORCEABLE_TOKEN_MEMBERS",
    "check_token_restrictions",
    "grant_refusal",
    "unenforceable_grant_members",
]

#: Grant members the middleware enforces (or that only say what is granted).
ENFORCED_GRANT_MEMBERS = frozenset(
    {"server_id", "tool_name", "operations", "constraints", "max_invocations", "dpop_required"}
)
#: Grant members the contract defines and the middleware cannot enforce.
UNENFORCEABLE_GRANT_MEMBERS = frozenset({"max_cost_per_invocation", "max_total_cost"})
#: Token members that restrict the token and that the middleware cannot enforce.
UNENFORCEABLE_TOKEN_MEMBERS = (
    "caveats",
    "scope_attenuations",
    "attenuation_proof",
    "budget_share_bps",
    "aggregate_invocation_budget",
)
#: Token members that say who, when and by whom, and restrict nothing further.
_TOKEN_MEMBERS = frozenset(
    {
        "id",
        "issuer",
        "subject",
        "scope",
        "issued_at",
        "expires_at",
        "delegation_chain",
        "algorithm",
        "schema",
        "signature",
    }
)
_SCOPE_MEMBERS = frozenset({"grants", "resource_grants", "prompt_grants"})
_WHY = {
    "max_cost_per_invocation": "the middleware meters no cost",
    "max_total_cost": "the middleware meters no cost",
    "caveats": "the middleware evaluates no caveats",
    "scope_attenuations": "the middleware does not verify attenuation steps",
    "attenuation_proof": "the middleware does not verify attenuation proofs",
    "budget_share_bps": "the middleware meters no shared budget",
    "aggregate_invocation_budget": "the middleware keeps no family-wide invocation count",
}
_QUOTE = 64


def _name(member: str) -> str:
    return repr(member if len(member) <= _QUOTE else member[:_QUOTE] + "...")


def unenforceable_grant_members(grant: ToolGrant) -> list[str]:
    """The members of ``grant`` that restrict it and that the middleware cannot enforce."""
    found = [m for m in sorted(UNENFORCEABLE_GRANT_MEMBERS) if getattr(grant, m) is not None]
    found.extend(sorted(grant.model_extra or ()))  # members this contract does not define
    return found


def grant_refusal(members: list[str]) -> str:
    """The reason a grant with ``members`` does not match."""
    member = members[0]
    why = _WHY.get(member, "this contract does not define it")
    return (
        f"the grant carries {_name(member)}, which this middleware cannot enforce ({why}); "
        "a grant with a restriction it cannot enforce does not match"
    )


def _present(token: CapabilityToken) -> list[str]:
    declared = {
        "caveats": token.caveats,
        "scope_attenuations": token.scope_attenuations,
        "attenuation_proof": token.attenuation_proof,
        "budget_share_bps": token.budget_share_bps,
    }
    extra = token.model_extra or {}
    found = [m for m, v in declared.items() if v is not None and v != [] and v != {}]
    found.extend(m for m in UNENFORCEABLE_TOKEN_MEMBERS if m in extra)
    found.extend(sorted(set(extra) - _TOKEN_MEMBERS - set(UNENFORCEABLE_TOKEN_MEMBERS)))
    return found


def check_token_restrictions(token: CapabilityToken) -> None:
    """Refuse a token that carries a restriction the middleware cannot enforce.

    Raises ``CapabilityInvalid(reason="unenforceable_restriction")`` naming the member.
    """
    found = _present(token)
    if found:
        member = found[0]
        why = _WHY.get(member, "this contract does not define it")
        raise CapabilityInvalid(
            f"capability carries {_name(member)}, a restriction this middleware cannot "
            f"enforce ({why}); refused",
            reason="unenforceable_restriction",
        )
    scope_extra = sorted(set(token.scope.model_extra or ()) - _SCOPE_MEMBERS)
    if scope_extra:
        raise CapabilityInvalid(
            f"capability scope carries {_name(scope_extra[0])}, which this contract does not "
            "define and this middleware cannot enforce; refused",
            reason="unenforceable_restriction",
        )
