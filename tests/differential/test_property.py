"""The property on generated requests, for every framework (PROTOCOL.md 5.1, 5.2).

Hypothesis draws requests (:mod:`.strategies`): bodies in every encoding and shape,
Content-Types with the spaces frameworks trim, and paths with every slash, dot and
percent-encoding trick. For each, either the middleware refused, or the handler that ran
is the one bound to the tool the middleware checked and read only what it checked.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from .apps import FRAMEWORKS
from .cases import describe, run
from .spec import capability
from .strategies import requests
from .wire import Wire, sign


@pytest.mark.parametrize("kind", FRAMEWORKS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=requests())
def test_generated_requests_keep_the_property(kind: str, drawn: tuple[Wire, tuple[str, str] | None]) -> None:
    wire, signed_for = drawn
    if signed_for is not None:
        wire = sign(wire, capability(), signed_for)
    reply, problems = run(kind, wire)
    assert problems == [], describe(kind, wire, reply, problems)
