"""Routing (PROTOCOL.md 5, 5.1): canonical paths, template converters, slash variants."""

from __future__ import annotations

import itertools
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chio_middleware.core.errors import BadRequest
from chio_middleware.core.routing import RouteBinding, RouteTable, check_canonical_path


def binding(path: str, method: str = "GET", tool: str = "t") -> RouteBinding:
    return RouteBinding(method=method, path=path, tool_server="s", tool_name=tool)


# (raw path, why it is refused). Each is also tried under a prefix and with a suffix.
NON_CANONICAL = [
    ("//files/get", "empty segment"),
    ("/files//get", "empty segment"),
    ("/files/./get", "dot segment"),
    ("/files/../admin", "dot segment"),
    ("/files/%2e%2e/admin", "encoded dot segment"),
    ("/files/%2E/get", "encoded dot segment"),
    ("/files/.%2e/admin", "encoded dot segment"),
    ("/files%2fget", "encoded slash"),
    ("/files%2Fget", "encoded slash"),
    ("/files%5cget", "encoded backslash"),
    ("/files\\get", "raw backslash"),
    ("/files/%00", "NUL"),
    ("/files/%0a", "control character"),
    ("/files/%7f", "DEL"),
    ("/files/%c2%85", "C1 control"),
    ("/files/%zz", "bad percent-encoding"),
    ("/files/%4", "bad percent-encoding"),
    ("/files/%ff", "invalid UTF-8"),
    ("/files/%c3", "invalid UTF-8"),
    ("/files/\xe9", "raw non-ASCII"),
    ("files/get", "no leading slash"),
]


def _check_raw(raw: str) -> None:
    # As uvicorn builds scope["path"]: decoded with invalid UTF-8 replaced.
    check_canonical_path(unquote(raw, errors="replace"), raw)


@pytest.mark.parametrize(
    ("raw", "prefix", "suffix"),
    [(raw, prefix, suffix) for (raw, _), prefix, suffix in itertools.product(NON_CANONICAL, ["", "/mnt"], ["", "/x", "?"])],
)
def test_non_canonical_paths_are_refused(raw: str, prefix: str, suffix: str) -> None:
    raw = raw if not prefix or not raw.startswith("/") else prefix + raw
    raw = raw + suffix.rstrip("?")
    with pytest.raises(BadRequest):
        _check_raw(raw)


@pytest.mark.parametrize("raw", ["/", "/files/get", "/notes/", "/a%20b/c", "/caf%C3%A9", "/a.b/..c/.d", "/x/%25"])
def test_canonical_paths_pass(raw: str) -> None:
    _check_raw(raw)


def test_decoded_path_alone_is_checked_when_no_raw_path() -> None:
    for path in ("//a", "/a/../b", "/a\\b", "/a\x00"):
        with pytest.raises(BadRequest):
            check_canonical_path(path)


@given(st.lists(st.sampled_from(["a", "", ".", "..", "%2e", "%2f", "%5c", "\\", "%00", "b%41"]), min_size=1, max_size=5))
def test_every_path_that_passes_is_what_any_normaliser_leaves_alone(segments: list[str]) -> None:
    """A path that passes has no segment a normaliser would merge, drop or split."""
    raw = "/" + "/".join(segments)
    try:
        check_canonical_path(unquote(raw), raw)
    except BadRequest:
        return
    decoded = unquote(raw).split("/")[1:]
    assert all(s not in (".", "..") for s in decoded)
    assert all(s for s in decoded[:-1])
    assert len(decoded) == len(raw.split("/")[1:])  # no encoded slash became a boundary
    assert "\\" not in unquote(raw)


@pytest.mark.parametrize(
    ("template", "path", "params"),
    [
        ("/notes/{note_id}", "/notes/7", {"note_id": "7"}),
        ("/notes/{note_id:int}", "/notes/7", {"note_id": 7}),
        ("/notes/<int:note_id>", "/notes/7", {"note_id": 7}),
        ("/notes/<int:note_id>", "/notes/\u0667", {"note_id": 7}),  # Werkzeug's \d+ takes any digit
        ("/notes/<note_id>", "/notes/x", {"note_id": "x"}),
        ("/blobs/{p:path}", "/blobs/a/b/c.txt", {"p": "a/b/c.txt"}),
        ("/blobs/<path:p>", "/blobs/a/b", {"p": "a/b"}),
        ("/blobs/{p:path}", "/blobs/", {"p": ""}),  # Starlette's path converter takes ""
        ("/m/{x:float}", "/m/1.5", {"x": 1.5}),
        ("/m/<float:x>", "/m/2", {"x": 2.0}),
        ("/u/{id:uuid}", "/u/0199c82c-c000-7b2e-b32a-eab828dff722", {"id": "0199c82c-c000-7b2e-b32a-eab828dff722"}),
    ],
)
def test_converters_match_what_the_frameworks_dispatch(template: str, path: str, params: dict[str, object]) -> None:
    match = RouteTable([binding(template)]).match("GET", path)
    assert match is not None and match.params == params and match.pattern == template


@pytest.mark.parametrize(
    ("template", "path"),
    [("/notes/{id:int}", "/notes/x"), ("/u/{id:uuid}", "/u/xyz"), ("/notes/{id}", "/notes/a/b")],
)
def test_converters_do_not_match_other_shapes(template: str, path: str) -> None:
    assert RouteTable([binding(template)]).match("GET", path) is None


@pytest.mark.parametrize(
    ("template", "path"),
    [("/notes/", "/notes"), ("/notes", "/notes/"), ("/notes/{id}", "/notes/7/")],
)
def test_trailing_slash_variants_are_bound(template: str, path: str) -> None:
    """Flask strict_slashes=False and the frameworks' slash redirects reach the same handler."""
    match = RouteTable([binding(template)]).match("GET", path)
    assert match is not None and match.pattern == template


def test_exact_binding_beats_the_slash_variant() -> None:
    table = RouteTable([binding("/a", tool="plain"), binding("/a/", tool="slash")])
    assert table.match("GET", "/a").tool_name == "plain"  # type: ignore[union-attr]
    assert table.match("GET", "/a/").tool_name == "slash"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "template",
    ["/a/{x:nope}", "/a/<nope:x>", "/a/{x}{y}", "/a/x{y}", "/a//b", "/a/{x}/{x:int}", "/a/<x"],
)
def test_bad_templates_are_refused_at_start_up(template: str) -> None:
    with pytest.raises(ValueError):
        binding(template)


def test_huge_int_segment_is_a_bad_request() -> None:
    table = RouteTable([binding("/n/{id:int}")])
    with pytest.raises(BadRequest):
        table.match("GET", "/n/" + "9" * 5000)


@pytest.mark.parametrize(
    ("route_path", "raw_path"),
    [("/get", "//files/get"), ("/files/get", "/files//get"), ("/x", "/y"), ("/a/b", "/a/c")],
)
def test_a_raw_path_that_does_not_decode_to_the_routed_path_is_refused(route_path: str, raw_path: str) -> None:
    """Someone between the client and the app normalised the path: refuse, never guess."""
    with pytest.raises(BadRequest):
        check_canonical_path(route_path, raw_path, route_path)
