"""Grant matching and grant constraints (PROTOCOL.md 5), with the reference's semantics.

A grant matches a tool when ``server_id`` and ``tool_name`` are equal or ``"*"``, its
operations contain ``invoke``, and every constraint holds on the request's arguments.
Among matching grants the most specific wins: exact server, then exact tool, then more
constraints, then the earlier grant. Constraints look at the string leaves of the
arguments (each with the object key it sits under):

- ``path_prefix``: every path-like leaf (path-ish key, or a value that looks like a path)
  normalised (``.``/``..`` resolved, segments compared whole) lies under the prefix; no
  path-like leaf at all fails;
- ``domain_exact`` / ``domain_glob``: every leaf that parses as a host name equals the
  domain / matches the ``*`` glob (case-insensitive); no such leaf fails;
- ``regex_match``: some leaf contains a match (unanchored search);
- ``max_length``: every leaf is at most N UTF-8 bytes;
- ``max_args_size``: the compact JSON of the arguments is at most N bytes;
- any other constraint type fails (never ignored).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeGuard

from .errors import MAX_ECHO_CHARS, AccessDenied, bounded
from .models import CapabilityToken, Constraint, ToolGrant

__all__ = [
    "SUPPORTED_CONSTRAINTS",
    "GrantMatch",
    "Leaf",
    "constraint_holds",
    "is_path_like_leaf",
    "match_grant",
    "normalise_path",
    "string_leaves",
]

SUPPORTED_CONSTRAINTS = frozenset(
    {"path_prefix", "domain_exact", "domain_glob", "regex_match", "max_length", "max_args_size"}
)

_PATH_KEYS = frozenset({"file", "filepath", "dir", "directory", "root", "cwd"})
_DOMAIN_CHARS = re.compile(r"[a-z0-9.-]+")


@dataclass(frozen=True, slots=True)
class GrantMatch:
    """The grant that authorises a call, its index in the scope, and whether DPoP is due."""

    grant: ToolGrant
    index: int
    dpop_required: bool


@dataclass(frozen=True, slots=True)
class Leaf:
    """A string leaf of the arguments and the object key it sits under."""

    key: str | None
    value: str


def string_leaves(value: Any, key: str | None = None) -> Iterator[Leaf]:
    """Every string leaf of a JSON value; array items inherit their array's key."""
    if isinstance(value, str):
        yield Leaf(key, value)
    elif isinstance(value, dict):
        for child_key, child in value.items():
            yield from string_leaves(child, child_key)
    elif isinstance(value, list):
        for child in value:
            yield from string_leaves(child, key)


def _is_path_key(key: str | None) -> bool:
    if key is None:
        return False
    lowered = key.lower()
    return "path" in lowered or lowered in _PATH_KEYS


def is_path_like_leaf(leaf: Leaf) -> bool:
    """A leaf under a path-ish key, or whose value looks like a path (the reference's test)."""
    return _is_path_key(leaf.key) or _looks_like_path(leaf.value)


def _looks_like_path(value: str) -> bool:
    if "://" in value:
        return False
    return value.startswith(("/", "./", "../", "~/")) or "/" in value or "\\" in value


def normalise_path(path: str) -> tuple[bool, list[str]] | None:
    """``(absolute, segments)`` with ``.``/``..`` resolved; ``None`` if it climbs above root."""
    absolute = path.startswith(("/", "\\"))
    segments: list[str] = []
    for segment in re.split(r"[/\\]", path):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                return None  # climbs above the root
            segments.pop()
            continue
        segments.append(segment)
    return absolute, segments


def _path_has_prefix(candidate: str, prefix: str) -> bool:
    normal_candidate = normalise_path(candidate)
    normal_prefix = normalise_path(prefix)
    if normal_candidate is None or normal_prefix is None:
        return False
    if normal_candidate[0] != normal_prefix[0]:
        return False
    wanted = normal_prefix[1]
    return normal_candidate[1][: len(wanted)] == wanted


def _normalise_domain(value: str) -> str:
    return value.strip().strip(".").lower()


def _parse_domain(value: str) -> str | None:
    trimmed = value.strip()
    if not trimmed:
        return None
    host_port = trimmed.split("://", 1)[1] if "://" in trimmed else trimmed
    authority = re.split(r"[/?#]", host_port, maxsplit=1)[0].rsplit("@", 1)[-1]
    host = _normalise_domain(authority.split(":", 1)[0].strip("."))
    if host == "localhost" or ("." in host and _DOMAIN_CHARS.fullmatch(host)):
        return host
    return None


@lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _compact_json_size(arguments: Any) -> int:
    return len(json.dumps(arguments, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def constraint_holds(constraint: Constraint, arguments: Mapping[str, Any]) -> bool:
    """Whether ``constraint`` holds on ``arguments``; unknown or ill-typed ones do not."""
    kind, value = constraint.type, constraint.value
    leaves = list(string_leaves(dict(arguments)))
    if kind == "path_prefix" and isinstance(value, str):
        paths = [leaf.value for leaf in leaves if is_path_like_leaf(leaf)]
        return bool(paths) and all(_path_has_prefix(path, value) for path in paths)
    if kind in ("domain_exact", "domain_glob") and isinstance(value, str):
        domains = [d for d in (_parse_domain(leaf.value) for leaf in leaves) if d is not None]
        if not domains:
            return False
        if kind == "domain_exact":
            return all(domain == _normalise_domain(value) for domain in domains)
        glob = _glob(value.lower())
        return all(glob.fullmatch(domain) for domain in domains)
    if kind == "regex_match" and isinstance(value, str):
        regex = _regex(value)
        return regex is not None and any(regex.search(leaf.value) for leaf in leaves)
    if kind == "max_length" and _is_count(value):
        return all(len(leaf.value.encode("utf-8")) <= value for leaf in leaves)
    if kind == "max_args_size" and _is_count(value):
        return _compact_json_size(dict(arguments)) <= value
    return False


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _first_failing(grant: ToolGrant, arguments: Mapping[str, Any]) -> Constraint | None:
    for constraint in grant.constraints or ():
        if not constraint_holds(constraint, arguments):
            return constraint
    return None


def match_grant(
    token: CapabilityToken, *, server: str, tool: str, arguments: Mapping[str, Any]
) -> GrantMatch:
    """Pick the most specific grant of ``token`` for ``server``/``tool`` whose constraints hold.

    Raises ``AccessDenied`` naming the tool, or the first failed constraint of the most
    specific grant that would otherwise have matched.
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
    matching: list[tuple[int, ToolGrant]] = []
    first_failure: Constraint | None = None
    for _, index, grant in candidates:
        failed = _first_failing(grant, arguments)
        if failed is None:
            matching.append((index, grant))
        elif first_failure is None:
            first_failure = failed
    if not matching:
        assert first_failure is not None
        detail = "" if first_failure.type in SUPPORTED_CONSTRAINTS else " (unsupported type)"
        raise AccessDenied(
            f"request arguments do not satisfy the grant's {first_failure.type} constraint{detail}",
            guard="ConstraintGuard",
        )
    index, grant = matching[0]
    dpop = any(g.dpop_required for _, g in matching)
    return GrantMatch(grant=grant, index=index, dpop_required=dpop)
