"""Hashes bound to a request and the caller identity hash (PROTOCOL.md 6)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .canonical import canonical_json, canonical_json_of_fast
from .crypto import sha256_hex

__all__ = [
    "anonymous_identity",
    "api_key_identity",
    "bearer_identity",
    "binding_json",
    "body_hash",
    "caller_identity_hash",
    "content_hash",
    "content_hash_from_binding",
    "cookie_identity",
    "dpop_identity",
    "request_binding_hash",
]


def body_hash(body: bytes) -> str | None:
    """``sha256_hex`` of the raw body, or ``None`` for an empty body."""
    return sha256_hex(body) if body else None


def request_binding_hash(
    method: str, path: str, query: Mapping[str, str], body_hash: str | None
) -> str:
    """The DPoP ``action_hash`` / nonce ``parameter_hash`` of a request (local extension).

    ``path`` is the decoded path the application sees (mount prefix included, no query);
    ``query`` the decoded query parameters (``{}`` when none).
    """
    return sha256_hex(
        canonical_json(
            {"body_hash": body_hash, "method": method.upper(), "path": path, "query": dict(query)}
        )
    )


def content_hash(
    method: str,
    path: str,
    query: Mapping[str, str],
    body_hash: str | None,
    route_pattern: str,
) -> str:
    """The receipt ``content_hash``: the binding inputs plus the matched route pattern."""
    return sha256_hex(
        canonical_json(
            {
                "body_hash": body_hash,
                "method": method.upper(),
                "path": path,
                "query": dict(query),
                "route_pattern": route_pattern,
            }
        )
    )


def binding_json(method: str, path: str, query: Mapping[str, str], body_hash: str | None) -> bytes:
    """The canonical JSON that :func:`request_binding_hash` hashes (shared with the receipt's
    ``content_hash``: one encoding of the request per request)."""
    members = dict(query)
    value = {"body_hash": body_hash, "method": method.upper(), "path": path, "query": members}
    # Strings, and the query's keys checked for ASCII (client text): the fast domain
    # without the recursive check; anything else takes canonical_json's own path. The
    # copy is what is checked and encoded (a mapping's items() could say otherwise).
    if (
        type(path) is str
        and (body_hash is None or type(body_hash) is str)
        and all(type(k) is str and k.isascii() and type(v) is str for k, v in members.items())
    ):
        return canonical_json_of_fast(value)
    return canonical_json(value)


def content_hash_from_binding(binding: bytes, route_pattern: str) -> str:
    """:func:`content_hash` from the request's :func:`binding_json`, without re-encoding it.

    ``route_pattern`` sorts after every member of the binding object (``body_hash``,
    ``method``, ``path``, ``query``), so the content object's canonical JSON is the binding's
    with one member appended before its closing brace.
    """
    return sha256_hex(
        b"".join((binding[:-1], b',"route_pattern":', _json_string(route_pattern), b"}"))
    )


def _json_string(value: str) -> bytes:
    return canonical_json_of_fast(value) if type(value) is str else canonical_json(value)


def caller_identity_hash(identity: Mapping[str, Any]) -> str:
    """``sha256_hex(JCS(identity))``."""
    return sha256_hex(canonical_json(dict(identity)))


def dpop_identity(agent_key_hex: str) -> dict[str, Any]:
    """The caller proven by a verified DPoP proof (local extension)."""
    return {
        "subject": agent_key_hex,
        "auth_method": {"method": "dpop", "agent_key": agent_key_hex},
        "verified": True,
    }


def anonymous_identity() -> dict[str, Any]:
    """The caller when no credential was verified."""
    return {"subject": "anonymous", "auth_method": {"method": "anonymous"}, "verified": False}


def bearer_identity(token: str) -> dict[str, Any]:
    """A bearer token caller (the reference's form; the token itself is never kept)."""
    token_hash = sha256_hex(token.encode("utf-8"))
    return {
        "subject": token_hash,
        "auth_method": {"method": "bearer", "token_hash": token_hash},
        "verified": False,
    }


def api_key_identity(key_name: str, key: str) -> dict[str, Any]:
    """An API-key caller (the reference's form)."""
    key_hash = sha256_hex(key.encode("utf-8"))
    return {
        "subject": key_hash,
        "auth_method": {"method": "api_key", "key_name": key_name, "key_hash": key_hash},
        "verified": False,
    }


def cookie_identity(cookie_name: str, cookie_value: str) -> dict[str, Any]:
    """A session-cookie caller (the reference's form)."""
    cookie_hash = sha256_hex(cookie_value.encode("utf-8"))
    return {
        "subject": cookie_hash,
        "auth_method": {"method": "cookie", "cookie_name": cookie_name, "cookie_hash": cookie_hash},
        "verified": False,
    }
