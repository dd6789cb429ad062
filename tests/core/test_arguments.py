"""The one argument view (PROTOCOL.md 5.2): what the frameworks read is what is checked.

Every body a lenient reader (``json.loads``, as Starlette, FastAPI and Flask's
``force=True`` call it) reads as JSON either gives exactly the same arguments here or is
refused; the tables below are generated over encodings, Content-Types and body shapes.
"""

from __future__ import annotations

import codecs
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chio_middleware.core.arguments import Arguments, media_type, request_arguments
from chio_middleware.core.errors import BadRequest
from chio_middleware.core.request import RequestView
from chio_middleware.core.routing import RouteBinding, RouteTable

TABLE = RouteTable(
    [RouteBinding(method="POST", path="/files/{name}", tool_server="s", tool_name="t")]
)
ROUTE = TABLE.match("POST", "/files/a")

# Characters Python's str.strip() removes (frameworks trim Content-Type with it).
UNICODE_SPACES = ["\xa0", "\x85", "\x1c", "\x1d", "\x1e", "\x1f", "\t", " ", "\x0b", "\x0c"]


def view(body: bytes, content_type: str | None = None, query: dict[str, str] | None = None) -> RequestView:
    headers = [] if content_type is None else [("content-type", content_type.encode("latin-1"))]
    return RequestView(method="POST", path="/files/a", query=query or {}, headers=headers, body=body)


def read(body: bytes, content_type: str | None = None, **kw: Any) -> Arguments:
    return request_arguments(view(body, content_type, **kw), ROUTE)


LENIENT_ONLY = [
    b'{"path":"/workspace/a","path":"/etc/shadow"}',  # duplicate key: last wins leniently
    b'{"path":"/etc/shadow","n":NaN}',
    b'{"path":"/etc/shadow","n":Infinity}',
    b'{"path":"/etc/shadow","n":-Infinity}',
    b'{"path":"/etc/shadow","n":1e400}',
    codecs.BOM_UTF8 + b'{"path":"/etc/shadow"}',
    *(json.dumps({"path": "/etc/shadow"}).encode(enc) for enc in (
        "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be",
    )),
]
CONTENT_TYPES = [None, "", "text/plain", "application/json", "application/octet-stream",
                 "APPLICATION/JSON; charset=utf-8", "application/json\xa0", "application/vnd.x+json"]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
@pytest.mark.parametrize("body", LENIENT_ONLY)
def test_bodies_json_reads_leniently_but_not_strictly_are_refused(body: bytes, content_type: str | None) -> None:
    json.loads(body)  # the frameworks read it
    with pytest.raises(BadRequest):
        read(body, content_type)


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_a_json_object_gives_its_members_whatever_the_content_type(content_type: str | None) -> None:
    args = read(b'{"path":"/workspace/a","n":1}', content_type)
    assert args == Arguments({"name": "a", "path": "/workspace/a", "n": 1})


@pytest.mark.parametrize("space", UNICODE_SPACES)
@pytest.mark.parametrize("form", ["application/x-www-form-urlencoded", "APPLICATION/X-WWW-FORM-URLENCODED"])
def test_media_type_is_trimmed_as_the_frameworks_trim_it(space: str, form: str) -> None:
    assert media_type(view(b"", form + space)) == form.lower()
    assert media_type(view(b"", space + form + space + "; charset=utf-8")) == form.lower()
    # so a JSON body declared as a form (with trailing Unicode whitespace) is refused ...
    with pytest.raises(BadRequest, match="declared as a form"):
        read(b'{"a":"&b=/workspace/","path":"/etc/passwd"}', form + space)
    # ... and a form declared as JSON with it too
    with pytest.raises(BadRequest, match="declared as JSON"):
        read(b"path=/etc/passwd", "application/json" + space)


def test_form_bodies_give_their_fields() -> None:
    assert read(b"path=%2Fworkspace%2Fa&x=a+b", "application/x-www-form-urlencoded").values == {
        "name": "a", "path": "/workspace/a", "x": "a b"
    }


@pytest.mark.parametrize(
    "body",
    [b"path=/a&path=/etc/shadow", b"path=\xc3\xa9", b"path=/a\n", b"p=%ff", b"name=b"],
)
def test_form_bodies_that_frameworks_read_differently_are_refused(body: bytes) -> None:
    with pytest.raises(BadRequest):
        read(body, "application/x-www-form-urlencoded")


@pytest.mark.parametrize(
    ("body", "content_type", "kind"),
    [
        (b'[{"path":"/etc/passwd"}]', None, "non-object JSON"),
        (b'"/etc/passwd"', "application/json", "non-object JSON"),
        (b"3", "text/plain", "non-object JSON"),
        (b"--b\r\nContent-Disposition: form-data; name=path\r\n\r\n/etc/passwd\r\n--b--\r\n",
         "multipart/form-data; boundary=b", "multipart"),
        (b"/etc/passwd", "text/plain", "text/plain body"),
        (b"/etc/passwd", None, "untyped body"),
    ],
)
def test_bodies_whose_arguments_cannot_be_seen_are_opaque(body: bytes, content_type: str | None, kind: str) -> None:
    assert read(body, content_type) == Arguments({"name": "a"}, opaque_body=kind)


def test_a_name_in_two_sources_is_refused() -> None:
    with pytest.raises(BadRequest, match="given twice"):
        read(b'{"name":"b"}', "application/json")
    with pytest.raises(BadRequest, match="given twice"):
        read(b'{"q":"b"}', "application/json", query={"q": "a"})


def test_two_content_types_are_refused() -> None:
    request = RequestView(
        method="POST", path="/", query={},
        headers=[("content-type", b"text/plain"), ("content-type", b"application/json")],
        body=b"{}",
    )
    with pytest.raises(BadRequest):
        request_arguments(request, None)


json_leaves = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=8,
)


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """JSON-ish bodies: any value, encoded in any JSON encoding, maybe with a BOM or a duplicate key."""
    value = draw(json_leaves)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()), allow_nan=True)
    if draw(st.booleans()) and text.startswith("{") and len(text) > 2:
        key = json.dumps(draw(st.text(max_size=3)))
        text = "{" + f"{key}:1,{key}:2," + text[1:]
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"]))
    return text.encode(encoding, "surrogatepass")


@given(body=raw_bodies(), content_type=st.sampled_from(CONTENT_TYPES))
def test_what_a_lenient_reader_reads_is_what_is_checked(body: bytes, content_type: str | None) -> None:
    """For every body: refused, or the lenient reading's members are exactly the arguments."""
    try:
        lenient = json.loads(body)
    except ValueError:
        lenient = None
    try:
        args = read(body, content_type)
    except BadRequest:
        return
    if isinstance(lenient, dict):
        assert args.values == {"name": "a", **lenient}
        assert args.opaque_body is None
    else:
        assert args.opaque_body is not None


def test_an_opaque_bodys_media_type_is_echoed_bounded_and_printable() -> None:
    args = read(b"x", "text/" + "a" * 5000 + "\x00")
    assert args.opaque_body is not None and len(args.opaque_body) <= 64
    assert args.opaque_body.isprintable()
