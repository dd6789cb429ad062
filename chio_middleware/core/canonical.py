"""Canonical JSON (RFC 8785 as Chio uses it) and strict JSON parsing (PROTOCOL.md 1.1).

Written here rather than taken from a library: the strict RFC 8785 implementations refuse
integers beyond 2^53, which Chio tokens carry (u64 timestamps), and none of them has a fast
path for the values that dominate the request path (objects of ASCII keys, strings and
integers). That fast path is the C-accelerated ``json`` encoder, whose output is exactly
RFC 8785 for such values: ``sort_keys`` orders ASCII keys as UTF-16 code units do, strings
are escaped with the short forms and lowercase ``\\u00xx``, and integers print exactly.
Everything else (floats, non-ASCII keys) takes the exact path below.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any

from .errors import echo

__all__ = [
    "CanonicalJsonError",
    "JsonParseError",
    "canonical_json",
    "canonical_json_exact",
    "canonical_json_of_fast",
    "is_fast_domain",
    "parse_json",
    "use_fast_encoder",
]


class CanonicalJsonError(ValueError):
    """The value cannot be represented in canonical JSON (NaN, infinity, bad type...)."""


class JsonParseError(ValueError):
    """Input is not strict JSON (syntax error, duplicate key, NaN, invalid UTF-8...)."""


_FAST_ENCODER = json.JSONEncoder(
    ensure_ascii=False,
    check_circular=False,
    allow_nan=False,
    sort_keys=True,
    separators=(",", ":"),
)


def _is_fast(value: Any) -> bool:
    """True when the C encoder's output is already canonical for ``value``.

    Leaves are tested inline and only containers recurse: this runs on every request.
    """
    t = type(value)
    if t is dict:
        items: Any = value.items()
        for key, item in items:
            if type(key) is not str or not key.isascii():
                return False
            ti = type(item)
            if ti is str or ti is int or ti is bool or item is None:
                continue
            if (ti is dict or ti is list or ti is tuple) and _is_fast(item):
                continue
            return False
        return True
    if t is list or t is tuple:
        for item in value:
            ti = type(item)
            if ti is str or ti is int or ti is bool or item is None:
                continue
            if (ti is dict or ti is list or ti is tuple) and _is_fast(item):
                continue
            return False
        return True
    return t is str or t is int or t is bool or value is None


#: An optional C encoder for the fast domain (sorted keys, compact, UTF-8), installed from
#: outside the core by :func:`use_fast_encoder` (the middleware installs orjson when it is
#: importable). It must give the stdlib fast path's bytes for every value it accepts; what
#: it refuses (integers past 64 bits, lone surrogates) falls to that path, which decides.
_accelerated: Callable[[Any], bytes] | None = None


def use_fast_encoder(encoder: Callable[[Any], bytes] | None) -> None:
    """Install (or, with ``None``, remove) the C encoder of the fast domain."""
    global _accelerated
    _accelerated = encoder


def canonical_json(value: Any) -> bytes:
    """Return the canonical JSON bytes of ``value`` (dicts, lists, str, int, float, bool, None)."""
    if _is_fast(value):
        return canonical_json_of_fast(value)
    return canonical_json_exact(value)


#: True when a value is in the fast domain (ASCII keys, strings, integers, booleans, null,
#: and lists and objects of them): what :func:`canonical_json_of_fast` may be given.
is_fast_domain = _is_fast


def canonical_json_of_fast(value: Any) -> bytes:
    """:func:`canonical_json` of a value the caller built in the fast domain.

    For objects built on the request path (receipts), whose members are typed by
    construction: the domain check is left to the caller, who checks only what came from
    elsewhere. A value outside the domain must never be given here (its bytes could differ
    from RFC 8785: floats, non-ASCII keys).
    """
    accelerated = _accelerated
    if accelerated is not None:
        try:
            return accelerated(value)
        except Exception:  # noqa: S110 - outside its range: the stdlib path decides
            pass
    try:
        return _FAST_ENCODER.encode(value).encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        raise CanonicalJsonError(f"value cannot be canonicalised: {exc}") from None


def canonical_json_exact(value: Any) -> bytes:
    """Return canonical JSON through the general path (any JSON value, floats included)."""
    parts: list[str] = []
    _write(value, parts)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalJsonError("strings must be valid Unicode (no lone surrogates)") from None


def _utf16_key(key: str) -> bytes:
    # Big-endian UTF-16 bytes compare exactly as the sequence of UTF-16 code units.
    return key.encode("utf-16-be", "surrogatepass")


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(encode_basestring(value))
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(_format_number(value))
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise CanonicalJsonError(f"object keys must be strings, not {type(key).__name__}")
        out.append("{")
        for index, key in enumerate(sorted(value, key=_utf16_key)):
            if index:
                out.append(",")
            out.append(encode_basestring(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise CanonicalJsonError(f"type {type(value).__name__} is not a JSON value")


def _format_number(value: float) -> str:
    """ECMAScript Number::toString (the shortest round-trip form), as RFC 8785 3.2.2.3."""
    if not math.isfinite(value):
        raise CanonicalJsonError("NaN and infinities have no JSON form")
    if value == 0:
        return "0"  # covers -0.0
    sign = "-" if value < 0 else ""
    # repr() is the shortest decimal that round-trips (David Gay / Ryu semantics).
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    assert isinstance(exponent, int)
    exponent += len(digit_tuple) - len(digits)
    k = len(digits)
    n = exponent + k  # the decimal point sits after n digits
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        text = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + text


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonParseError(f"duplicate object key {echo(key)}")
            seen.add(key)
    return result


def _refuse_constant(name: str) -> Any:
    raise JsonParseError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise JsonParseError(f"number {text[:32]} is out of range")
    return number


_STRICT_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs_without_duplicates,
    parse_constant=_refuse_constant,
    parse_float=_finite_float,
)


#: A lone surrogate as a character (only a ``str`` input can hold one).
_SURROGATE = re.compile("[\ud800-\udfff]")
#: A ``\\uD800``-``\\uDFFF`` escape: a half of a pair, or a lone surrogate. Escaped
#: backslashes can make this match where no escape is; the parsed strings then decide.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def _has_surrogate(value: Any) -> bool:
    """True when a string anywhere in ``value`` (a key included) holds a lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            for key, member in item.items():
                if _SURROGATE.search(key):
                    return True
                stack.append(member)
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_json(data: bytes | str) -> Any:
    """Parse strict JSON: UTF-8 only, no duplicate keys, no NaN/Infinity, finite numbers.

    Every string of the result is valid Unicode: a ``\\ud800``-style escape that is not
    half of a surrogate pair is refused, as RFC 8259 8.2 allows, because such a string has
    no UTF-8 form and could be neither hashed, signed nor stored.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise JsonParseError("JSON text is not valid UTF-8") from None
    else:
        text = data
        if _SURROGATE.search(text):
            raise JsonParseError("JSON text is not valid Unicode (a lone surrogate)")
    if text.startswith("\ufeff"):
        raise JsonParseError("JSON text must not start with a byte order mark")
    try:
        value = _STRICT_DECODER.decode(text)
    except JsonParseError:
        raise
    except (ValueError, RecursionError) as exc:
        raise JsonParseError(f"invalid JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(text) and _has_surrogate(value):
        raise JsonParseError("JSON string holds a lone surrogate escape (not valid Unicode)")
    return value
