"""The guard pipeline: the :class:`Guard` protocol and the built-in guards.

A guard looks at a verified call (:class:`GuardContext`) and either passes, optionally
returning a short detail for its evidence, or raises a :class:`ChioError` (usually
:class:`AccessDenied` or :class:`RateLimited`). ``check`` may be a plain or an ``async``
method. Guards run in order; each adds one GuardEvidence to the receipt; the first denial
decides, with its own code and status.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .constraints import is_path_like_leaf, leaf_path, normalise_path, scalar_leaves
from .errors import AccessDenied, StateForgotten
from .linear_regex import LinearRegex
from .models import CapabilityToken, ToolGrant
from .replay import AsyncReplayStore, TokenBucket, forgotten_at
from .request import RequestView
from .routing import RouteMatch

__all__ = [
    "ForbiddenPathGuard",
    "Guard",
    "GuardContext",
    "InvocationBudgetGuard",
    "RateLimitGuard",
    "SecretLeakGuard",
    "parse_rate",
]


@dataclass(frozen=True, slots=True)
class GuardContext:
    """What a guard may look at: the request, its route and the verified credentials."""

    request: RequestView
    route: RouteMatch
    capability: CapabilityToken
    grant: ToolGrant
    grant_index: int
    subject: str
    arguments: dict[str, Any]
    now: int
    store: AsyncReplayStore


@runtime_checkable
class Guard(Protocol):
    """A check on a verified call. Raise a ChioError to deny; return a detail or None.

    Optional class attributes: ``reads_arguments = False`` for a guard that never looks at
    the arguments or the body (a guard without it is assumed to read them, so a body whose
    arguments cannot be seen is refused while it runs, PROTOCOL.md 5.2);
    ``before_reservation = True`` for a guard that must pass before replay slots are taken.
    """

    name: str

    def check(self, context: GuardContext) -> str | Awaitable[str | None] | None:
        """Pass (optionally with a detail for the evidence) or raise to deny."""


_RATE = re.compile(r"\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*")
_PERIOD = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(text: str) -> TokenBucket:
    """Parse ``"60/minute"`` (also ``s``/``sec``/``second``, ``m``/``min``, ``h``/``hour``)."""
    match = _RATE.fullmatch(text)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"rate {text!r} is not of the form '<count>/<second|minute|hour>'")
    count = int(match.group(1))
    return TokenBucket(rate=count / _PERIOD[match.group(2)], burst=count)


class RateLimitGuard:
    """A token bucket per capability subject, shared through the replay/budget store."""

    name = "RateLimitGuard"
    #: Awaits only the store: never suspends on the WSGI path (see ``engine.run_sync``).
    store_only = True
    #: Runs before any replay slot is taken, so a limited caller cannot hold slots.
    before_reservation = True
    #: Looks at the subject only, never at the arguments (PROTOCOL.md 5.2).
    reads_arguments = False

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket

    async def check(self, context: GuardContext) -> str | None:
        """Take a token for the subject; ``RateLimited`` (429) when the bucket is empty."""
        await context.store.take(f"rate:{context.subject}", bucket=self.bucket, now=context.now)
        return None


class InvocationBudgetGuard:
    """Counts calls against the matched grant's ``max_invocations``, across all workers."""

    name = "InvocationBudgetGuard"
    store_only = True
    reads_arguments = False

    async def check(self, context: GuardContext) -> str | None:
        """Consume one invocation; ``BudgetExceeded`` (429) once the budget is spent.

        A capability issued before the store was seen to have lost its state is refused
        (``StateForgotten``): its count may have been forgotten, so it could be overspent.
        """
        limit = context.grant.max_invocations
        if limit is None:
            return None
        self._refuse_if_forgotten(context)
        key = f"budget:{context.capability.id}:{context.grant_index}"
        used = await context.store.consume(
            key, limit=limit, expires_at=context.capability.expires_at, now=context.now
        )
        self._refuse_if_forgotten(context)  # this very call may be the one that noticed
        return f"invocation {used} of {limit}"

    def _refuse_if_forgotten(self, context: GuardContext) -> None:
        forgot = forgotten_at(context.store)
        if forgot is not None and context.capability.issued_at <= forgot:
            raise StateForgotten(
                f"the replay store lost its state (noticed at {int(forgot)}): the invocation "
                "count of this capability may be lost, so its max_invocations grant is refused "
                "until it expires; use a capability issued since",
                guard=self.name,
            )


class ForbiddenPathGuard:
    """Refuses calls whose path-like arguments match a forbidden glob (``**`` spans dirs).

    It looks at every path-like leaf (``constraints.is_path_like_leaf``: strings, and
    numbers and booleans as their JSON text; a ``file:`` URL as its decoded path),
    normalised (``.``/``..`` resolved, ``\\`` as ``/``), as it is and, when it holds a
    ``%``, percent-decoded; a path that climbs above its root is refused too. The globs
    are matched with RE2, in linear time.
    """

    name = "ForbiddenPathGuard"

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = list(patterns)
        self._regexes = [LinearRegex(_glob_to_regex(p), dot_nl=True) for p in self.patterns]
        # One search per path; the single patterns only name the one that matched.
        self._any = LinearRegex(
            "|".join(f"(?:{_glob_to_regex(p)})" for p in self.patterns) or "[^\\x00-\\x{10FFFF}]",
            dot_nl=True,
        )

    def check(self, context: GuardContext) -> str | None:
        """Deny (403) when a normalised path argument matches a pattern."""
        for leaf in scalar_leaves(context.arguments):
            if not is_path_like_leaf(leaf):
                continue
            path = leaf_path(leaf)
            self._check_path(path)
            if "%" in path:  # and as whatever decodes it next would read it
                self._check_path(urllib.parse.unquote(path))
        return None

    def _check_path(self, path: str) -> None:
        normal = normalise_path(path)
        if normal is None:
            raise AccessDenied("a path argument climbs above its root", guard=self.name)
        absolute, segments = normal
        candidate = ("/" if absolute else "") + "/".join(segments)
        if not self._any.fullmatch(candidate):
            return
        for pattern, regex in zip(self.patterns, self._regexes, strict=True):
            if regex.fullmatch(candidate):
                raise AccessDenied(
                    f"a path argument matches the forbidden pattern {pattern!r}",
                    guard=self.name,
                )


def _glob_to_regex(pattern: str) -> str:
    # '**' matches across directories, '*' and '?' within one segment.
    out = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
        else:
            char = pattern[index]
            out.append("[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char))
            index += 1
    return "".join(out)


# Well-known secret formats. Each is specific enough that a match in a request body is
# almost certainly a leaked credential; the detail names the kind, never the value.
_SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("private key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b")),
    (
        "AWS secret access key",
        re.compile(r"aws_secret_access_key\W{0,4}[A-Za-z0-9/+=]{40}", re.IGNORECASE),
    ),
    ("Google API key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b")),
    ("GCP service account key", re.compile(r'"private_key_id"\s*:\s*"[0-9a-f]{40}"')),
    ("GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})")),
    ("Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("Stripe secret key", re.compile(r"\b[rs]k_live_[A-Za-z0-9]{20,}")),
    ("Azure storage key", re.compile(r"AccountKey=[A-Za-z0-9+/]{86}==")),
    ("OpenAI API key", re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_\-]{32,}")),
)

#: For each pattern, literals of which every match contains one, and whether they are
#: looked for in the lower-cased text. Most texts hold none, and a substring test is a
#: fraction of a search that tries every position; ``tests/core/test_leaf_guards.py`` holds
#: the guard equal to the searches alone. The case-insensitive pattern's literal is
#: ``_acce``: under Unicode case folding ``a``, ``c`` and ``e`` match only their capitals
#: (unlike ``s`` and ``k``, which also match U+017F and the Kelvin sign U+212A), and ``_``
#: only itself, so every match holds ``_acce`` once lower-cased.
_SECRET_LITERALS: tuple[tuple[tuple[str, ...], bool], ...] = (
    (("-----BEGIN ",), False),
    (("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA"), False),
    (("_acce",), True),
    (("AIza",), False),
    (('"private_key_id"',), False),
    (("gh", "github_pat_"), False),
    (("xox",), False),
    (("k_live_",), False),
    (("AccountKey=",), False),
    (("sk-",), False),
)
_SECRET_CHECKS = tuple(zip(_SECRET_PATTERNS, _SECRET_LITERALS, strict=True))


class SecretLeakGuard:
    """Refuses bodies and arguments carrying private keys or well-known cloud credentials.

    It scans what the application may read, however it decodes it: every decoded argument
    leaf and key; the raw body decoded leniently as UTF-8 (BOM or not), and, when it holds
    NUL bytes, as UTF-16 and UTF-32 of either byte order; each of those texts also
    percent-decoded, and read as lenient JSON (``\\u`` escapes resolved, every value of a
    repeated key kept) whose string leaves and keys are scanned as well.
    """

    name = "SecretLeakGuard"

    def check(self, context: GuardContext) -> str | None:
        """Deny (403) naming the kind of secret found; the value is never echoed."""
        # One text, one search per pattern: the pieces are joined by newlines, which no
        # pattern's credential characters span.
        kind = secret_kind("\n".join(_texts_to_scan(context.request.body, context.arguments)))
        if kind is not None:
            raise AccessDenied(f"request carries a secret ({kind})", guard=self.name)
        return None


def secret_kind(text: str) -> str | None:
    """The kind of the first well-known secret format found in ``text``, else ``None``."""
    lowered = None
    for (kind, pattern), (literals, lower) in _SECRET_CHECKS:
        haystack = text
        if lower:
            haystack = lowered = text.lower() if lowered is None else lowered
        for literal in literals:
            if literal in haystack:
                break
        else:
            continue  # no match can exist without one of these literals
        if pattern.search(text):
            return kind
    return None


_WIDE_CODECS = ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")


def _texts_to_scan(body: bytes, arguments: dict[str, Any]) -> Iterator[str]:
    yield from _json_texts(arguments)
    if not body:
        return
    decoded = [_utf8_sig(body)]
    if b"\x00" in body:  # an ASCII secret in a wide encoding has NUL bytes
        decoded.extend(body.decode(codec, "replace") for codec in _WIDE_CODECS)
    for text in decoded:
        yield text
        if "%" in text or "+" in text:  # else unquote_plus gives the text back as it is
            unquoted = urllib.parse.unquote_plus(text)
            if unquoted != text:
                yield unquoted
        if "\\" not in text:
            continue  # without a backslash, every JSON string is verbatim in the text
        try:
            parsed = json.loads(text.lstrip("\ufeff"), object_pairs_hook=lambda pairs: {"": pairs})
        except (ValueError, RecursionError):
            continue
        yield from _json_texts(parsed)


def _utf8_sig(body: bytes) -> str:
    """``body.decode("utf-8-sig", "replace")`` without the codec's Python wrapper: the BOM
    bytes decode to exactly one leading U+FEFF, and nothing else decodes to it there."""
    text = body.decode("utf-8", "replace")
    return text[1:] if text.startswith("\ufeff") else text


def _json_texts(value: Any) -> Iterator[str]:
    """Every string and object key of a decoded JSON value (pairs lists included)."""
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            yield current
        elif isinstance(current, dict):
            for key, child in current.items():
                if isinstance(key, str):
                    yield key
                stack.append(child)
        elif isinstance(current, list | tuple):
            stack.extend(current)
