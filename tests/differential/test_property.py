"""The property on generated requests, for every framework (PROTOCOL.md 5.1, 5.2).

Hypothesis draws requests (:mod:`.strategies`): bodies in every encoding and shape,
Content-Types with the spaces frameworks trim, and paths with every slash, dot and
percent-encoding trick. For each, either the middleware refused, or the handler that ran
is the one bound to the tool the middleware checked and read only what it checked.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .apps import FRAMEWORKS
from .cases import describe, run
from .spec import attacker_grants, capability, synthetic_grant
from .strategies import requests
from .wire import Wire, sign


@pytest.mark.parametrize("kind", FRAMEWORKS)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=requests(), broad=st.booleans())
def test_generated_requests_keep_the_property(
    kind: str, drawn: tuple[Wire, tuple[str, str] | None], broad: bool
) -> None:
    """``broad``: the capability also grants unbound side effects (PROTOCOL.md 5.3)."""
    wire, signed_for = drawn
    if signed_for is not None:
        grants = attacker_grants() + ([synthetic_grant()] if broad else [])
        wire = sign(wire, capability(grants=grants), signed_for)
    reply, problems = run(kind, wire)
    assert problems == [], describe(kind, wire, reply, problems)
