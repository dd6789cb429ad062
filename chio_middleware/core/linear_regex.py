"""A typed wrapper of ``google-re2``: regular expressions matched in linear time.

Grant constraints (``regex_match``) and the forbidden-path globs run attacker-chosen text
through patterns, so they use RE2 (PROTOCOL.md 5.2): no backtracking, so no input makes a
match take more than time linear in its length. RE2's syntax is the Rust ``regex`` crate's
(the reference's): no backreferences, no lookaround; such a pattern does not compile.
Text is matched as UTF-8; a lone surrogate is encoded as is (it can never match a
character class that needs a valid code point).
"""

from __future__ import annotations

from functools import lru_cache

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

__all__ = ["LinearRegex", "PatternError", "compile_linear"]


class PatternError(ValueError):
    """A pattern RE2 cannot compile; the message is RE2's reason."""


def _options(*, dot_nl: bool = False) -> object:
    options = re2.Options()
    options.log_errors = False  # RE2 would print every bad pattern to stderr
    options.dot_nl = dot_nl
    return options


class LinearRegex:
    """A compiled RE2 pattern (``search``/``fullmatch`` return whether it matched)."""

    __slots__ = ("_regexp", "pattern")

    def __init__(self, pattern: str, *, dot_nl: bool = False) -> None:
        self.pattern = pattern
        try:
            encoded = pattern.encode("utf-8")
        except UnicodeEncodeError:
            raise PatternError("the pattern is not valid Unicode text") from None
        try:
            self._regexp = re2.compile(encoded, _options(dot_nl=dot_nl))
        except re2.error as exc:
            reason = exc.args[0] if exc.args else "does not compile"
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            raise PatternError(str(reason)) from None

    def search(self, text: str) -> bool:
        """Whether the pattern matches somewhere in ``text`` (unanchored)."""
        return self._regexp.search(_utf8(text)) is not None

    def fullmatch(self, text: str) -> bool:
        """Whether the pattern matches the whole of ``text``."""
        return self._regexp.fullmatch(_utf8(text)) is not None


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@lru_cache(maxsize=512)
def compile_linear(pattern: str) -> LinearRegex | PatternError:
    """A cached compile; returns (does not raise) the error of a pattern RE2 refuses."""
    try:
        return LinearRegex(pattern)
    except PatternError as exc:
        return exc
