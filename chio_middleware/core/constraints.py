"""Grant constraints on a call's arguments (PROTOCOL.md 5.2), monotone and in linear time.

A constraint is a property that every leaf of its kind must have. Adding an argument adds
leaves and never changes what the existing leaves are, so it can never turn a deny into an
allow (the one exception is a constraint that needs a leaf to look at and had none, which
denies). The leaves are the scalar values of the arguments object, each with the object key
it sits under (array items inherit their array's key): strings as they are, numbers and
booleans as their JSON text (``{"path": 3}`` is the path ``"3"``); ``null`` carries no text
and is no leaf.

- ``path_prefix``: every *path-like* leaf (its key contains ``path`` or is one of
  ``file``/``filepath``/``dir``/``directory``/``root``/``cwd``, or its value starts with
  ``/``, ``./``, ``../``, ``~``, contains ``/`` or ``\\``, is ``.`` or ``..``, or is a
  ``file:`` URL), normalised (``.``/``..`` resolved, ``/`` and ``\\`` both separators,
  segments compared whole), lies under the prefix; a path that climbs above its root never
  does, nor one with a segment that percent-decodes to ``.``/``..`` or holds an encoded
  separator; a ``file:`` URL is checked as its decoded path; at least one path-like leaf.
- ``domain_exact`` / ``domain_glob``: every host a leaf names equals the domain / matches
  the ``*`` glob, hosts normalised as a WHATWG URL parser does (ada): IPv4 in any numeric
  form, IPv6, IDNA, case, one trailing dot. A leaf names a host when a WHATWG parser reads
  it as a URL with a host (also ``//host/...``), when it sits under a host-ish key
  (``host``/``domain`` in the key, ``server``, ``origin``, ``ip``, ``authority``, ``netloc``)
  and is not empty, or when it looks like a bare host (``localhost``, ``[v6]``, dotted
  quads, dotted names with a letter, optionally with a port). For a URL both the WHATWG
  host and Python's ``urllib`` host count, so a parser differential (``\\@``) cannot
  hide one; a leaf whose host does not parse fails. At least one host.
- ``regex_match``: every leaf contains a match of the pattern (RE2 syntax, unanchored
  search, linear time); a pattern RE2 cannot compile denies; at least one leaf.
- ``max_length``: every leaf is at most N UTF-8 bytes.
- ``max_args_size``: the compact JSON of the arguments is at most N UTF-8 bytes.
- any other type, a value of the wrong type, or a constraint member other than ``type``
  and ``value``: deny.
"""

from __future__ import annotations

import functools
import json
import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Literal, TypeGuard

import ada_url

from .errors import AccessDenied
from .linear_regex import PatternError, compile_linear
from .models import Constraint

__all__ = [
    "SUPPORTED_CONSTRAINTS",
    "ArgumentLeaves",
    "ConstraintFailure",
    "Leaf",
    "check_constraint",
    "constraint_holds",
    "glob_match",
    "has_encoded_dot_segment",
    "is_path_like_leaf",
    "leaf_hosts",
    "leaf_path",
    "normalise_host",
    "normalise_path",
    "scalar_leaves",
    "string_leaves",
]

SUPPORTED_CONSTRAINTS = frozenset(
    {"path_prefix", "domain_exact", "domain_glob", "regex_match", "max_length", "max_args_size"}
)

_PATH_KEYS = frozenset({"file", "filepath", "dir", "directory", "root", "cwd"})
_HOST_KEYS = frozenset({"server", "origin", "ip", "authority", "netloc"})
_CONSTRAINT_MEMBERS = frozenset({"type", "value"})
#: Longest piece of a key or pattern quoted back in a reason (attacker text stays bounded).
_QUOTE = 64


@dataclass(frozen=True, slots=True)
class Leaf:
    """A scalar leaf of the arguments, the object key it sits under, and its kind.

    ``value`` is the string itself, or the JSON text of a number or boolean
    (``string=False``).
    """

    key: str | None
    value: str
    string: bool = True


def string_leaves(value: Any, key: str | None = None) -> Iterator[Leaf]:
    """Every string leaf of a JSON value; array items inherit their array's key."""
    return (leaf for leaf in scalar_leaves(value, key) if leaf.string)


def scalar_leaves(value: Any, key: str | None = None) -> Iterator[Leaf]:
    """Every string, number and boolean leaf (the latter two as their JSON text).

    A leaf of any other type (``null`` aside) is refused (``AccessDenied``), never skipped:
    a check that cannot read a value must not pass it. The argument view hands over only
    JSON values (:mod:`.arguments`); this holds for arguments built elsewhere too.
    """
    stack: list[tuple[str | None, Any]] = [(key, value)]
    while stack:  # iterative: nesting depth is the attacker's choice
        current_key, current = stack.pop()
        if isinstance(current, str):
            yield Leaf(current_key, current)
        elif isinstance(current, bool | int | float):
            yield Leaf(current_key, _json_text(current), string=False)
        elif isinstance(current, dict) and all(type(k) is str for k in current):
            stack.extend(reversed([(k, v) for k, v in current.items()]))
        elif isinstance(current, list | tuple):
            stack.extend(reversed([(current_key, v) for v in current]))
        elif current is not None:
            name = type(current).__name__[:64]
            raise AccessDenied(
                f"argument {str(current_key)[:64]!r} is a {name}, which no check can read",
                guard="ConstraintGuard",
            )


def _json_text(value: bool | int | float) -> str:
    return json.dumps(value)


# -- paths ----------------------------------------------------------------------------------


def _is_path_key(key: str | None) -> bool:
    if key is None:
        return False
    lowered = key.lower()
    return "path" in lowered or lowered in _PATH_KEYS


#: What a WHATWG parser drops: leading/trailing C0 controls and spaces, and every tab or
#: newline anywhere.
_C0_SPACE = "".join(map(chr, range(0x21)))
_TAB_NEWLINE = str.maketrans("", "", "\t\n\r")


def _is_file_url(value: str) -> bool:
    head = value.lstrip(_C0_SPACE)
    if "\t" in head or "\n" in head or "\r" in head:
        head = head.translate(_TAB_NEWLINE)
    return head[:5].lower() == "file:"


def _looks_like_path(value: str) -> bool:
    if _is_file_url(value):
        return True
    if "://" in value:
        return False
    return (
        value.startswith(("/", "./", "../", "~"))
        or "/" in value
        or "\\" in value
        or value in (".", "..")
    )


def is_path_like_leaf(leaf: Leaf) -> bool:
    """A leaf under a path-ish key, or whose value looks like a path or is a ``file:`` URL."""
    return _is_path_key(leaf.key) or _looks_like_path(leaf.value)


def leaf_path(leaf: Leaf) -> str:
    """The path a path-like leaf names: a ``file:`` URL's decoded path, else the value."""
    if _is_file_url(leaf.value):
        try:
            url = ada_url.URL(_well_formed(leaf.value))
        except ValueError:
            return leaf.value  # not a URL: checked as it is, which fails any prefix
        return urllib.parse.unquote(url.pathname)
    return leaf.value


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


def has_encoded_dot_segment(path: str) -> bool:
    """Whether a segment of ``path`` percent-decodes to ``.``/``..`` or holds ``/`` or ``\\``.

    Such a path means one thing here and another to whatever decodes it next (a URL built
    from it, a second service), so ``path_prefix`` refuses it (as PROTOCOL.md 5.1 refuses
    such request paths).
    """
    if "%" not in path:
        return False
    for segment in re.split(r"[/\\]", path):
        if "%" in segment:
            decoded = urllib.parse.unquote(segment)
            if decoded in (".", "..") or "/" in decoded or "\\" in decoded:
                return True
    return False


def _path_has_prefix(candidate: str, prefix: tuple[bool, list[str]] | None) -> bool:
    normal_candidate = normalise_path(candidate)
    if normal_candidate is None or prefix is None:
        return False
    if normal_candidate[0] != prefix[0]:
        return False
    wanted = prefix[1]
    return normal_candidate[1][: len(wanted)] == wanted


# -- hosts ----------------------------------------------------------------------------------

_IPV6_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\](?::[0-9]*)?")
_NOT_IN_BARE_HOST = re.compile(r"[\s/\\?#@\[\]]")


def _is_host_key(key: str | None) -> bool:
    if key is None:
        return False
    lowered = key.lower()
    return "host" in lowered or "domain" in lowered or lowered in _HOST_KEYS


def _looks_like_bare_host(value: str) -> bool:
    """``localhost``, ``[v6]``, a dotted quad or a dotted name with a letter; ``:port`` ok.

    Written without backtracking regexes: the value may be 64 KB of dots.
    """
    text = value.strip()
    if text.startswith("["):
        return _IPV6_HOST.fullmatch(text) is not None
    name, colon, port = text.partition(":")
    if (colon and not port.isdigit() and port) or _NOT_IN_BARE_HOST.search(name):
        return False
    if name.rstrip(".").lower() == "localhost":
        return True
    if "." not in name:
        return False
    parts = name.rstrip(".").split(".")
    return any(char.isalpha() for char in name) or (
        len(parts) == 4 and all(part.isdigit() for part in parts)
    )


def normalise_host(host: str) -> str | None:
    """A host as a WHATWG parser reads it (lowercase, IDNA, IPv4 canonical, ``[v6]``),
    without one trailing dot; ``None`` when it is not a valid host."""
    literal = f"[{host}]" if ":" in host and not host.startswith("[") else host
    try:
        parsed = ada_url.URL(f"http://{literal}/").hostname
    except ValueError:
        return None
    return _strip_dot(parsed) if parsed else None


def _strip_dot(host: str) -> str:
    return host[:-1] if host.endswith(".") else host


def _urllib_host(text: str) -> str | Literal[False] | None:
    """The host Python's ``urllib`` reads (``False``: none; ``None``: it refuses the URL)."""
    try:
        host = urllib.parse.urlsplit(text).hostname
    except ValueError:
        return None
    return host if host else False


def _url_hosts(text: str) -> list[str | None]:
    """The hosts a URL names to WHATWG and to urllib (``None`` for one that does not parse)."""
    try:
        whatwg = ada_url.URL(text).hostname
    except ValueError:
        return [None]
    hosts: list[str | None] = [_strip_dot(whatwg.lower()) if whatwg else None]
    python = _urllib_host(text)
    if python is None:
        hosts.append(None)
    elif python is not False:
        hosts.append(normalise_host(python))
    return hosts


def _well_formed(text: str) -> str:
    """``text`` with lone surrogates replaced (U+FFFD), as a lenient encoder would send it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def leaf_hosts(leaf: Leaf) -> list[str | None] | None:
    """The hosts a leaf names (``None`` entries: unparseable), or ``None`` if it names none."""
    text = _well_formed(leaf.value).strip()
    if not text:
        return None
    url = "http:" + text if text.startswith(("//", "\\\\", "/\\", "\\/")) else text
    try:
        whatwg = ada_url.URL(url)
    except ValueError:
        whatwg = None
    if whatwg is not None and whatwg.hostname:
        return _url_hosts(url)
    if _is_host_key(leaf.key) or _looks_like_bare_host(text):
        return _url_hosts("http://" + text)
    return None


def glob_match(pattern: str, text: str) -> bool:
    """Whether ``text`` matches a ``*``-only glob (``*`` any run, also empty), in linear time.

    The literal pieces between stars must appear in order; the first is a prefix, the last
    a suffix, the middle ones are found leftmost (which is optimal for ``*``-only globs).
    """
    parts = pattern.split("*")
    if len(parts) == 1:
        return text == pattern
    first, last = parts[0], parts[-1]
    if len(text) < len(first) + len(last) or not (text.startswith(first) and text.endswith(last)):
        return False
    position, end = len(first), len(text) - len(last)
    for part in parts[1:-1]:
        if not part:
            continue
        found = text.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True


@lru_cache(maxsize=256)
def _normal_glob(pattern: str) -> str:
    text = _strip_dot(pattern.strip().lower())
    try:
        ascii_form = ada_url.idna_to_ascii(text)
    except (ValueError, UnicodeError):
        return text
    return ascii_form.decode("ascii") if ascii_form else text


# -- evaluation -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConstraintFailure:
    """Why a constraint does not hold.

    ``kind``: ``"violation"`` (a leaf fails it), ``"no_candidate"`` (it needs a leaf of its
    kind and there is none), ``"invalid"`` (the constraint itself cannot be enforced).
    """

    kind: Literal["violation", "no_candidate", "invalid"]
    reason: str


class ArgumentLeaves:
    """The leaves of one call's arguments, each view computed once for all grants."""

    def __init__(self, arguments: Mapping[str, Any]) -> None:
        self.arguments = dict(arguments)

    @cached_property
    def scalars(self) -> list[Leaf]:
        """Every string, number and boolean leaf."""
        return list(scalar_leaves(self.arguments))

    @cached_property
    def paths(self) -> list[tuple[Leaf, str]]:
        """Every path-like leaf with the path it names."""
        return [(leaf, leaf_path(leaf)) for leaf in self.scalars if is_path_like_leaf(leaf)]

    @cached_property
    def hosts(self) -> list[tuple[Leaf, list[str | None]]]:
        """Every leaf that names a host, with the hosts it names."""
        named = ((leaf, leaf_hosts(leaf)) for leaf in self.scalars)
        return [(leaf, hosts) for leaf, hosts in named if hosts is not None]

    @cached_property
    def json_size(self) -> int:
        """UTF-8 bytes of the compact JSON of the arguments."""
        text = json.dumps(self.arguments, ensure_ascii=False, separators=(",", ":"))
        return len(text.encode("utf-8", "surrogatepass"))


def _quote(text: str | None) -> str:
    if text is None:
        return "an array item"
    shown = text if len(text) <= _QUOTE else text[:_QUOTE] + "..."
    return f"argument {shown!r}"


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _violation(reason: str) -> ConstraintFailure:
    return ConstraintFailure("violation", reason)


def check_constraint(
    constraint: Constraint, arguments: Mapping[str, Any] | ArgumentLeaves
) -> ConstraintFailure | None:
    """``None`` when ``constraint`` holds on ``arguments``, else why it does not."""
    view = arguments if isinstance(arguments, ArgumentLeaves) else ArgumentLeaves(arguments)
    extra = set(constraint.model_extra or ()) - _CONSTRAINT_MEMBERS
    if extra:
        return ConstraintFailure(
            "invalid", f"the constraint has members this middleware does not know: {sorted(extra)}"
        )
    kind, value = constraint.type, constraint.value
    if kind == "path_prefix" and isinstance(value, str):
        return _check_path_prefix(value, view)
    if kind in ("domain_exact", "domain_glob") and isinstance(value, str):
        return _check_domain(kind, value, view)
    if kind == "regex_match" and isinstance(value, str):
        return _check_regex(value, view)
    if kind == "max_length" and _is_count(value):
        for leaf in view.scalars:
            if len(leaf.value.encode("utf-8", "surrogatepass")) > value:
                return _violation(f"{_quote(leaf.key)} is longer than {value} bytes")
        return None
    if kind == "max_args_size" and _is_count(value):
        if view.json_size > value:
            return _violation(f"the arguments are larger than {value} bytes")
        return None
    if kind in SUPPORTED_CONSTRAINTS:
        return ConstraintFailure("invalid", "the constraint's value has the wrong type")
    return ConstraintFailure("invalid", "this constraint type is not supported (unsupported type)")


def _check_path_prefix(prefix: str, view: ArgumentLeaves) -> ConstraintFailure | None:
    if not view.paths:
        return ConstraintFailure("no_candidate", "no path argument to check")
    normal_prefix = normalise_path(prefix)
    for leaf, path in view.paths:
        if has_encoded_dot_segment(path):
            return _violation(f"{_quote(leaf.key)} has a percent-encoded dot segment or separator")
        if not _path_has_prefix(path, normal_prefix):
            return _violation(f"{_quote(leaf.key)} is not under the allowed prefix")
    return None


def _check_domain(kind: str, value: str, view: ArgumentLeaves) -> ConstraintFailure | None:
    if kind == "domain_exact":
        expected = normalise_host(value.strip())
        if expected is None:
            return ConstraintFailure("invalid", "the constraint's domain is not a valid host")
        allowed: Callable[[str], bool] = expected.__eq__
    else:
        pattern = _normal_glob(value)
        allowed = functools.partial(glob_match, pattern)
    if not view.hosts:
        return ConstraintFailure("no_candidate", "no URL or host argument to check")
    for leaf, hosts in view.hosts:
        for host in hosts:
            if host is None:
                return _violation(f"{_quote(leaf.key)} names a host that does not parse")
            if not allowed(host):
                return _violation(f"{_quote(leaf.key)} names a host outside the allowed domain")
    return None


def _check_regex(pattern: str, view: ArgumentLeaves) -> ConstraintFailure | None:
    regex = compile_linear(pattern)
    if isinstance(regex, PatternError):
        shown = pattern if len(pattern) <= _QUOTE else pattern[:_QUOTE] + "..."
        return ConstraintFailure(
            "invalid", f"the pattern {shown!r} does not compile under RE2: {regex}"
        )
    if not view.scalars:
        return ConstraintFailure("no_candidate", "no argument to check")
    for leaf in view.scalars:
        if not regex.search(leaf.value):
            return _violation(f"{_quote(leaf.key)} does not match the pattern")
    return None


def constraint_holds(constraint: Constraint, arguments: Mapping[str, Any]) -> bool:
    """Whether ``constraint`` holds on ``arguments``; unknown or ill-typed ones do not."""
    return check_constraint(constraint, arguments) is None
