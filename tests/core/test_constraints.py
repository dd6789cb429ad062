"""Constraints (PROTOCOL.md 5.2): what each applies to, attack classes, monotonicity."""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.parse
from typing import Any

import httpx
import pytest
import urllib3.util
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chio_middleware.core.constraints import (
    ArgumentLeaves,
    check_constraint,
    constraint_holds,
    glob_match,
    leaf_hosts,
    normalise_host,
    scalar_leaves,
)
from chio_middleware.core.models import Constraint


def c(kind: str, value: object = None) -> Constraint:
    return Constraint(type=kind, value=value)  # type: ignore[arg-type]


PREFIX = c("path_prefix", "/workspace/safe/")
EXACT = c("domain_exact", "api.good.com")
GLOB = c("domain_glob", "*.good.com")
WORD = c("regex_match", "^[a-z]+$")


# -- path_prefix ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "ok"),
    [
        ({"path": "/workspace/safe/report.txt"}, True),
        ({"path": "/workspace/safe"}, True),
        ({"path": "/workspace/safe/../secret.txt"}, False),
        ({"path": "/workspace/safeX/report.txt"}, False),
        ({"path": "/../workspace/safe/x"}, False),
        ({"file": "relative/x"}, False),
        ({"title": "no paths here"}, False),
        ({"note": "/etc/passwd"}, False),
        ({"a": {"b": ["/workspace/safe/1", "/workspace/safe/2"]}}, True),
        ({"a": ["/workspace/safe/1", "/tmp/2"]}, False),
        ({"path": "/workspace/safe/x", "url": "https://a/b"}, True),
        # every path-like leaf, not only the first; numbers and booleans as JSON text
        ({"path": "/workspace/safe/x", "backup_path": "/etc/shadow"}, False),
        ({"path": 3}, False),
        ({"path": True}, False),
        ({"path": "/workspace/safe/x", "dir": 0}, False),
        # values that name a path whatever their key
        ({"path": "/workspace/safe/x", "name": ".."}, False),
        ({"path": "/workspace/safe/x", "name": "~root"}, False),
        ({"path": "/workspace/safe/x", "w": "C:\\Windows\\win.ini"}, False),
        ({"path": "/workspace/safe/x", "src": "file:///etc/passwd"}, False),
        ({"src": "file:///workspace/safe/a%20b"}, True),
        ({"src": "FILE://localhost/workspace/safe/%2e%2e/%2e%2e/etc"}, False),
        ({"path": "/workspace/safe/a\\..\\..\\..\\etc"}, False),
        ({"path": "/workspace/safe/%2e%2e/%2E%2e/etc"}, False),  # encoded dot segments
        ({"path": "/workspace/safe/a%2f..%2f..%2fetc"}, False),  # an encoded separator
        ({"path": "/workspace/safe/100%25 done"}, True),  # other escapes are harmless
        ({"path": None}, False),  # null carries no path: no candidate
        ({"path": "/workspace/safe/x", "src": "file:///etc/\ud800"}, False),
        ({"path": "/workspace/safe/x", "src": "\x01 fi\tle:///etc/passwd"}, False),
    ],
)
def test_path_prefix(arguments: dict, ok: bool) -> None:
    assert constraint_holds(PREFIX, arguments) is ok


# -- domains --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "exact", "glob"),
    [
        ({"url": "https://API.good.com:8443/x?y#z"}, True, True),
        ({"url": "https://user@api.good.com/"}, True, True),
        ({"url": "https://api.good.com./"}, True, True),
        ({"url": "https://good.com/"}, False, False),
        ({"url": "https://a.b.good.com/"}, False, True),
        ({"url": "https://api.good.com/", "file": "report.txt"}, False, False),
        ({"title": "nothing"}, False, False),
        ({"host": "api.good.com"}, True, True),
        ({"host": "API.GOOD.COM:443"}, True, True),
        ({"target": "api.good.com"}, True, True),  # a bare host under any key
        ({"url": "//api.good.com/x"}, True, True),  # protocol-relative
        # finding 4: every host a WHATWG parser (or urllib) reads, next to an allowed decoy
        ({"a": "https://api.good.com/", "b": "http://2852039166/"}, False, False),
        ({"a": "https://api.good.com/", "b": "http://[::ffff:a9fe:a9fe]/"}, False, False),
        ({"a": "https://api.good.com/", "b": "http://intranet/"}, False, False),
        ({"a": "https://api.good.com/", "b": "http://evil.com\\@api.good.com/"}, False, False),
        ({"a": "https://api.good.com/", "b": "http://api.good.com\\@evil.com/"}, False, False),
        ({"a": "https://api.good.com/", "b": "http://api.good.com@evil.com/"}, False, False),
        ({"a": "https://api.good.com/", "b": "http:evil.com"}, False, False),
        (
            {"a": "https://api.good.com/", "b": "HTTP://\uff25\uff36\uff29\uff2c\u3002com/"},
            False,
            False,
        ),
        ({"a": "https://api.good.com/", "host": "2852039166"}, False, False),
        ({"a": "https://api.good.com/", "host": 2852039166}, False, False),
        ({"a": "https://api.good.com/", "b": "169.254.169.254"}, False, False),
        ({"a": "https://api.good.com/", "b": "[::1]:80"}, False, False),
        ({"a": "https://api.good.com/", "b": "localhost:8080"}, False, False),
        ({"a": "https://api.good.com/", "host": "bad host name"}, False, False),
        ({"url": "https://api.good.com/", "n": 3.5, "flag": True, "v": "1.2"}, True, True),
        # a lone surrogate does not hide a URL (a lenient encoder sends it as U+FFFD)
        ({"a": "https://api.good.com/", "b": "http://evil.com/\ud800"}, False, False),
        ({"a": "https://api.good.com/", "host": "evil\ud800.com"}, False, False),
    ],
)
def test_domains(arguments: dict, exact: bool, glob: bool) -> None:
    assert constraint_holds(EXACT, arguments) is exact
    assert constraint_holds(GLOB, arguments) is glob


def test_hosts_are_normalised_as_a_whatwg_parser_does() -> None:
    assert normalise_host("0xA9.0376.43518") == "169.254.169.254"
    assert normalise_host("::ffff:169.254.169.254") == "[::ffff:a9fe:a9fe]"
    assert normalise_host("Bücher.DE.") == "xn--bcher-kva.de"
    assert normalise_host("exa mple.com") is None
    assert constraint_holds(c("domain_exact", "bücher.de"), {"u": "http://BÜCHER.de/"})
    assert constraint_holds(c("domain_glob", "*.Bücher.de"), {"u": "http://a.xn--bcher-kva.de"})
    assert not constraint_holds(c("domain_exact", "not a host"), {"u": "http://a/"})


def test_glob_match() -> None:
    assert glob_match("*.good.com", "a.good.com") and glob_match("*", "")
    assert glob_match("a*b*c", "abc") and glob_match("a*b*c", "axxbyyc")
    assert not glob_match("a*b*c", "acb") and not glob_match("*.good.com", "good.com")
    assert not glob_match("ab*ba", "aba")  # prefix and suffix may not overlap
    assert glob_match("good.com", "good.com") and not glob_match("good.com", "goodXcom")


# -- regex_match, max_length, max_args_size -------------------------------------------------


def test_regex_match_holds_on_every_leaf() -> None:
    attack = {"name": "Robert'); DROP TABLE students;--", "ref": "abc"}
    assert not constraint_holds(WORD, attack)  # finding 4: a decoy no longer carries it
    assert constraint_holds(WORD, {"name": "robert", "ref": "abc"})
    assert not constraint_holds(WORD, {"name": "robert", "n": 7})  # "7" is checked too
    assert not constraint_holds(WORD, {})  # nothing to check: deny
    assert not constraint_holds(WORD, {"name": "abc\n"})  # RE2: $ is the end of the text
    assert constraint_holds(c("regex_match", "ab+"), {"x": "zzabbb"})  # unanchored search


def test_regex_patterns_re2_cannot_compile_deny_with_the_reason() -> None:
    for pattern in ["(?<=a)b", r"(a)\1", "("]:
        failure = check_constraint(c("regex_match", pattern), {"x": "ab"})
        assert failure is not None and failure.kind == "invalid"
        assert "does not compile under RE2" in failure.reason


def test_pathological_inputs_finish_and_are_decided() -> None:
    """Finding 5 (timings in benchmarks/bench_constraints.py): linear engines."""
    evil = c("regex_match", r"^([a-zA-Z0-9]+\s?)*$")
    assert not constraint_holds(evil, {"x": "a" * 35 + "!"})
    assert constraint_holds(evil, {"x": "a" * 35})
    assert not constraint_holds(evil, {"x": "a1 " * 20_000 + "!"})
    many = c("domain_glob", "*a*a*a*a*a*a*a*a*.good.com")
    host = "a" * 60_000 + ".evil.com"
    assert not constraint_holds(many, {"host": host})
    assert constraint_holds(many, {"host": "a" * 60_000 + ".good.com"})
    assert not constraint_holds(GLOB, {"url": "http://" + "a." * 32_000 + "evil.com/"})
    assert not constraint_holds(GLOB, {"x": "a." * 32_000 + ":"})  # a 64 KB bare-host probe


def test_max_length_and_max_args_size() -> None:
    assert constraint_holds(c("max_length", 4), {"x": "é" * 2, "n": 1234})
    assert not constraint_holds(c("max_length", 4), {"x": "é" * 2, "n": 12345})  # JSON text
    assert not constraint_holds(c("max_length", 3), {"x": "é" * 2})
    assert constraint_holds(c("max_length", 3), {})
    assert not constraint_holds(c("max_length", 3), {"x": "\ud800\ud800"})  # no crash
    assert constraint_holds(c("max_args_size", 10), {"a": "é"})  # {"a":"é"}: 10 UTF-8 bytes
    assert not constraint_holds(c("max_args_size", 9), {"a": "é"})
    assert not constraint_holds(c("max_length", "3"), {"x": "a"})
    assert not constraint_holds(c("max_length", True), {"x": "a"})


@pytest.mark.parametrize("kind", ["governed_intent_required", "custom", "table_allowlist", "x"])
def test_other_constraint_types_deny(kind: str) -> None:
    failure = check_constraint(c(kind, ["a", "b"]), {"a": "b"})
    assert failure is not None and failure.kind == "invalid"


def test_leaves_are_strings_numbers_and_booleans_with_their_keys() -> None:
    leaves = list(scalar_leaves({"a": [1, "x", {"b": False}], "c": None, "d": 1.5}))
    assert [(x.key, x.value, x.string) for x in leaves] == [
        ("a", "1", False),
        ("a", "x", True),
        ("b", "false", False),
        ("d", "1.5", False),
    ]
    deep: Any = "leaf"
    for _ in range(5000):  # nesting depth is the caller's choice: no recursion limit
        deep = [deep]
    assert [x.value for x in scalar_leaves({"k": deep})] == ["leaf"]


# -- generated attack classes ---------------------------------------------------------------

#: The machine is shared: generation speed is not what these tests are about.
SLOW = [HealthCheck.too_slow]
IPV4 = st.integers(min_value=0, max_value=2**32 - 1)


def ipv4_forms(address: int) -> list[str]:
    """Spellings of one IPv4 address that WHATWG parsers accept."""
    octets = ipaddress.IPv4Address(address).packed
    return [
        str(address),
        hex(address),
        ".".join(str(o) for o in octets),
        ".".join(hex(o) for o in octets),
        ".".join("0" + oct(o)[2:] for o in octets),
        f"{octets[0]}.{int.from_bytes(octets[1:], 'big')}",
        f"[::ffff:{octets[0]:02x}{octets[1]:02x}:{octets[2]:02x}{octets[3]:02x}]",
        ".".join(str(o) for o in octets) + ".",
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=SLOW)
@given(address=IPV4, decoy_first=st.booleans(), scheme=st.sampled_from(["http", "HTTPS", "ws"]))
def test_generated_numeric_hosts_never_pass_a_domain_constraint(
    address: int, decoy_first: bool, scheme: str
) -> None:
    for form in ipv4_forms(address):
        for leaf in (f"{scheme}://{form}/latest/meta-data", f"{scheme}://u:p@{form}:8080/"):
            items = [("decoy", "https://api.good.com/"), ("target", leaf)]
            arguments = dict(items if decoy_first else items[::-1])
            assert not constraint_holds(EXACT, arguments), leaf
            assert not constraint_holds(GLOB, arguments), leaf


LABEL = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)


@settings(max_examples=80, deadline=None, suppress_health_check=SLOW)
@given(
    evil=LABEL.filter(lambda s: not s.endswith("-")),
    trick=st.sampled_from(
        [
            "http://{evil}.com\\@api.good.com/",
            "http://api.good.com\\@{evil}.com/",
            "http://api.good.com@{evil}.com/",
            "http://api.good.com:x@{evil}.com/",
            "http:/\\{evil}.com/",
            "//{evil}.com/api.good.com",
            "http://{evil}/",
            "http://{EVIL}.com/",
            "http://{evil}.com./",
            "http://{evil}.com#@api.good.com/",
            "http://{evil}.com?@api.good.com/",
            " http://{evil}.com/",
            "http://{evil}.good.com.{evil}.com/",
            "http://api.good.com.{evil}.com/",
        ]
    ),
)
def test_generated_host_tricks_never_pass(evil: str, trick: str) -> None:
    leaf = trick.format(evil=evil, EVIL=evil.upper())
    arguments = {"decoy": "https://api.good.com/", "target": leaf}
    assert not constraint_holds(EXACT, arguments), leaf
    assert not constraint_holds(GLOB, arguments), leaf


@settings(max_examples=80, deadline=None, suppress_health_check=SLOW)
@given(
    payload=st.text(min_size=1).filter(lambda s: re.search(r"[^a-z]", s) is not None),
    decoys=st.lists(st.from_regex(r"[a-z]+", fullmatch=True), min_size=1, max_size=4),
)
def test_generated_injections_never_pass_a_regex_with_decoys(payload: str, decoys: list) -> None:
    arguments: dict[str, Any] = {f"d{i}": d for i, d in enumerate(decoys)}
    arguments["q"] = payload
    assert not constraint_holds(WORD, arguments)


SEGMENT = st.sampled_from(["a", "b", ".", "..", "%2e%2e", "", "safe", "workspace", "etc"])


@settings(max_examples=150, deadline=None, suppress_health_check=SLOW)
@given(segments=st.lists(SEGMENT, max_size=8), sep=st.sampled_from(["/", "\\"]))
def test_generated_paths_are_allowed_exactly_when_they_resolve_under_the_prefix(
    segments: list[str], sep: str
) -> None:
    path = sep + sep.join(["workspace", "safe", *segments])
    stack: list[str] = []
    climbs = False
    for segment in ["workspace", "safe", *segments]:
        if segment in ("", "."):
            continue
        if segment == "..":
            if not stack:
                climbs = True
                break
            stack.pop()
        else:
            stack.append(segment)
    inside = not climbs and stack[:2] == ["workspace", "safe"] and "%2e%2e" not in segments
    assert constraint_holds(PREFIX, {"decoy": "/workspace/safe/ok", "path": path}) is inside


# -- monotonicity (PROTOCOL.md 5.2) ---------------------------------------------------------

ATOMS = st.one_of(
    st.sampled_from(
        [
            "/workspace/safe/a",
            "/workspace/safe/../../etc/passwd",
            "/etc/shadow",
            "..",
            "relative/x",
            "file:///etc/passwd",
            "https://api.good.com/x",
            "http://2852039166/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://intranet/",
            "http://evil.com\\@api.good.com/",
            "api.good.com",
            "a.good.com",
            "evil.com",
            "abc",
            "ABC",
            "Robert'); DROP TABLE",
            "",
            "é" * 20,
            "x" * 200,
        ]
    ),
    st.text(max_size=12),
    st.integers(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.none(),
)
KEYS = st.sampled_from(["path", "file", "dir", "url", "host", "domain", "q", "ref", "name", "a"])
VALUES = st.recursive(
    ATOMS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)
ARGUMENTS = st.dictionaries(KEYS, VALUES, max_size=4)
EVERY_TYPE = [
    PREFIX,
    c("path_prefix", "relative"),
    EXACT,
    GLOB,
    c("domain_glob", "*"),
    WORD,
    c("regex_match", "a"),
    c("regex_match", "(?<=a)"),
    c("max_length", 8),
    c("max_args_size", 120),
    c("custom", ["x"]),
    c("max_length", "8"),
]


@settings(max_examples=400, deadline=None, suppress_health_check=SLOW)
@given(
    constraint=st.sampled_from(EVERY_TYPE),
    arguments=ARGUMENTS,
    extra_key=st.text(min_size=1, max_size=8) | KEYS,
    extra=VALUES,
)
def test_adding_an_argument_never_turns_a_deny_into_an_allow(
    constraint: Constraint, arguments: dict, extra_key: str, extra: Any
) -> None:
    """allowed(A + x) implies allowed(A), unless A had nothing the constraint could check."""
    if extra_key in arguments:
        return
    with_extra = {**arguments, extra_key: extra}
    if check_constraint(constraint, with_extra) is None:
        failure = check_constraint(constraint, arguments)
        assert failure is None or failure.kind == "no_candidate", failure
    # the contrapositive, as the attack is phrased: a violating leaf is never outvoted
    failure = check_constraint(constraint, arguments)
    if failure is not None and failure.kind != "no_candidate":
        assert check_constraint(constraint, with_extra) is not None


@settings(max_examples=150, deadline=None, suppress_health_check=SLOW)
@given(arguments=ARGUMENTS)
def test_leaves_views_agree_with_the_raw_arguments(arguments: dict) -> None:
    view = ArgumentLeaves(arguments)
    assert view.json_size == len(
        json.dumps(arguments, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "surrogatepass"
        )
    )
    for leaf, hosts in view.hosts:
        assert hosts == leaf_hosts(leaf)


# -- what HTTP clients would connect to -----------------------------------------------------


def _client_hosts(url: str) -> list[str | None]:
    """The host each client parser in the dev dependencies reads (skipping refusals)."""
    readers = [
        lambda u: httpx.URL(u).host,
        lambda u: urllib3.util.parse_url(u).host,
        lambda u: urllib.parse.urlsplit(u).hostname,
    ]
    hosts: list[str | None] = []
    for read in readers:
        try:
            host = read(url)
        except Exception:  # this client refuses the URL: it connects nowhere
            continue
        if host:
            hosts.append(normalise_host(host.strip("[]")))
    return hosts


URL_PIECES = st.tuples(
    st.sampled_from(["http://", "https://", "HTTP://", "http:", "http:/", "http:\\\\", "//"]),
    st.sampled_from(["", "u@", "u:p@", "api.good.com@", "evil.com@", "a@b@", "evil.com\\@"]),
    st.sampled_from(
        [
            "api.good.com",
            "API.GOOD.COM.",
            "evil.com",
            "api.good.com.evil.com",
            "2852039166",
            "[::1]",
            "intranet",
            "xn--bcher-kva.de",
        ]
    ),
    st.sampled_from(["", ":80", ":8443", ":x"]),
    st.sampled_from(
        [
            "",
            "/",
            "/p",
            "\\@evil.com/",
            "\\@api.good.com/",
            "@evil.com",
            "#@evil.com",
            "?@evil.com",
            "/../@evil.com",
        ]
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=SLOW)
@given(pieces=URL_PIECES)
def test_an_allowed_url_connects_only_to_the_allowed_host_in_every_client(pieces: tuple) -> None:
    url = "".join(pieces)
    if constraint_holds(EXACT, {"url": url}):
        assert set(_client_hosts(url)) <= {"api.good.com"}, url
