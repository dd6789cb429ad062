from __future__ import annotations

import base64

import pytest

from chio_middleware.core.canonical import canonical_json
from chio_middleware.core.hashing import (
    anonymous_identity,
    api_key_identity,
    body_hash,
    caller_identity_hash,
    content_hash,
    dpop_identity,
    request_binding_hash,
)
from tests.vectors import cases


@pytest.mark.parametrize("case", cases("chio_http/request_hash_v1.json"))
def test_request_hash_vector(case: dict) -> None:
    body = base64.b64decode(case["body_b64"])
    bh = body_hash(body)
    assert bh == case["body_hash"]
    assert (
        request_binding_hash(case["method"], case["path"], case["query"], bh)
        == case["request_binding_hash"]
    )
    assert (
        content_hash(case["method"], case["path"], case["query"], bh, case["route_pattern"])
        == case["content_hash"]
    )


@pytest.mark.parametrize("case", cases("chio_http/caller_identity_v1.json"))
def test_caller_identity_vector(case: dict) -> None:
    identity = case["identity"]
    assert canonical_json(identity).decode() == case["canonical"]
    assert caller_identity_hash(identity) == case["hash"]
    method = identity["auth_method"]["method"]
    if method == "dpop":
        assert dpop_identity(identity["subject"]) == identity
    elif method == "anonymous":
        assert anonymous_identity() == identity


def test_api_key_identity_has_the_reference_shape() -> None:
    identity = api_key_identity("x-api-key", "secret")
    assert "secret" not in canonical_json(identity).decode()
    assert identity["auth_method"]["key_name"] == "x-api-key"
    assert identity["subject"] == identity["auth_method"]["key_hash"]


def test_method_is_uppercased_and_query_order_is_irrelevant() -> None:
    a = request_binding_hash("post", "/x", {"b": "2", "a": "1"}, None)
    b = request_binding_hash("POST", "/x", {"a": "1", "b": "2"}, None)
    assert a == b
    assert a != request_binding_hash("POST", "/x", {"a": "1", "b": "3"}, None)
