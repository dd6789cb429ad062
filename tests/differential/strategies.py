"""Hypothesis strategies for attacker requests: bodies, Content-Types and paths.

:func:`requests` draws one request aimed at one of the applications' routes:

- a path derived from the route's (extra, empty, ``.``/``..`` and encoded-dot segments;
  ``/``, ``//``, ``\\``, ``%2F`` and ``%5C`` as separators; characters percent-encoded
  in either case, non-ASCII digits, invalid escapes and bad UTF-8; a toggled trailing slash);
- a query of harmless and hostile values, sometimes repeated;
- a body: JSON written token by token (duplicate keys, ``NaN``/``Infinity``/``1e400``,
  huge integers, ``\\u`` escapes, nesting, non-object documents) in UTF-8, with a BOM or
  in UTF-16/32; a form; multipart; arbitrary bytes; or nothing;
- a Content-Type: matching the body or not, in any case, with parameters, and with the
  spaces ``str.strip()`` removes (U+00A0, U+0085, U+001C-U+001F, ...) around it;
- the agent's signature: for the route's tool, another tool, the synthetic tool, or none.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from .spec import BY_NAME, SYNTHETIC_TOOL, TOOLS
from .wire import Wire

#: (tool or None for the unbound handler, method, a path that reaches it)
ROUTES: tuple[tuple[str | None, str, str], ...] = (
    ("file_get", "GET", "/files/get"),
    ("file_read", "POST", "/files/read"),
    ("file_form", "POST", "/files/form"),
    ("file_body", "POST", "/files/body"),
    ("file_values", "POST", "/files/values"),
    ("blob_get", "GET", "/blobs/workspace/a.txt"),
    ("item_get", "GET", "/items/7"),
    ("report_list", "GET", "/reports/"),
    ("delete_note", "DELETE", "/notes/7"),
    ("purge", "POST", "/admin/purge"),
    ("note_read", "GET", "/cbv/7"),
    ("note_read", "HEAD", "/cbv/7"),
    ("note_write", "POST", "/cbv/7"),
    ("mounted_get", "GET", "/api/v1/files/a.txt"),
    (None, "GET", "/health"),
    (None, "GET", "/public/echo"),
    (None, "POST", "/public/echo"),
)

VALUES = (
    "/workspace/a.txt",
    "/workspace/",
    "/etc/shadow",
    "/etc/passwd",
    "/workspace/../etc/shadow",
    "workspace/a",
    "/workspace/" + "a" * 70,
    "",
    "a b",
    "x",
    "\u00e9t\u00e9",
    "\u0667",
)
KEYS = ("path", "note", "ref", "a", "n", "p", "id", "note_id", "file")

SPACES = (b"", b"", b"", b" ", b"\t", b"\xa0", b"\x85", b"\x1c", b"\x1d", b"\x1e", b"\x1f", b"\x0b", b"\x0c")
MEDIA = (
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=diffbound",
    "application/vnd.api+json",
    "application/octet-stream",
    "application/json; charset=utf-8",
    "application/json;charset=utf-16",
    "application/x-www-form-urlencoded; charset=utf-8",
    "text/json",
)
ENCODINGS = (
    "utf-8", "utf-8", "utf-8", "utf-8", "utf-8-sig",
    "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be",
)  # fmt: skip
NUMBERS = (
    "0", "-0", "7", "1.5", "1E2", "-1e-7", "1e400", "-1e400", "NaN", "Infinity", "-Infinity",
    "12345678901234567890", "9" * 40,
)  # fmt: skip


# -- paths -----------------------------------------------------------------------------------


def _percent(char: str, lower: bool) -> str:
    text = "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return text.lower() if lower else text


@st.composite
def _segment(draw: st.DrawFn, segment: str) -> str:
    out = []
    for char in segment:
        if draw(st.integers(0, 9)) == 0:
            out.append(_percent(char, draw(st.booleans())))
        else:
            out.append(char)
    if draw(st.integers(0, 11)) == 0:
        out.append(draw(st.sampled_from(["%D9%A7", "%EF%BC%97", "%ff", "%zz", "%0", "%00", "%0a", "%C3%A9", "%252e", "%20", "\u00e9"])))
    return "".join(out)


@st.composite
def paths(draw: st.DrawFn, base: str) -> str:
    segments = [draw(_segment(s)) for s in base.strip("/").split("/")] if base != "/" else []
    if draw(st.integers(0, 3)) == 0:
        junk = st.sampled_from(["", ".", "..", "%2e", "%2E%2e", "x", "..;", "%2e%2e"])
        at = draw(st.integers(0, len(segments)))
        segments[at:at] = draw(st.lists(junk, min_size=1, max_size=2))
    separators = st.sampled_from(["/"] * 12 + ["//", "\\", "%2F", "%2f", "%5C"])
    out = draw(st.sampled_from(["/"] * 8 + ["//", "\\", "/./"]))
    for index, segment in enumerate(segments):
        out += segment + (draw(separators) if index < len(segments) - 1 else "")
    if draw(st.integers(0, 5)) == 0:
        out = out[:-1] if out.endswith("/") and len(out) > 1 else out + "/"
    return out


# -- queries ---------------------------------------------------------------------------------


def _form_encode(text: str, plus: bool) -> str:
    out = []
    for char in text:
        if char.isascii() and (char.isalnum() or char in "-._~/"):
            out.append(char)
        elif char == " " and plus:
            out.append("+")
        else:
            out.append(_percent(char, False))
    return "".join(out)


@st.composite
def _pairs(draw: st.DrawFn, max_size: int = 3) -> list[tuple[str, str]]:
    names = st.sampled_from(KEYS) | st.text("abcxyz_", min_size=0, max_size=3)
    values = st.sampled_from(VALUES) | st.text(max_size=6)
    return draw(st.lists(st.tuples(names, values), max_size=max_size))


@st.composite
def _query_text(draw: st.DrawFn, text: str, plus: bool) -> str:
    """``text`` form-encoded, with some safe characters percent-encoded too (``p%61th``)."""
    out = []
    for char in text:
        if char.isascii() and (char.isalnum() or char in "-._~/") and draw(st.integers(0, 9)):
            out.append(char)
        elif char == " " and plus:
            out.append("+")
        else:
            out.append(_percent(char, draw(st.booleans())))
    return "".join(out)


@st.composite
def queries(draw: st.DrawFn) -> str:
    pairs = draw(_pairs())
    if draw(st.booleans()):
        pairs.insert(0, ("ref", "/workspace/x"))
    plus = draw(st.booleans())
    encoded = []
    for name, value in pairs:
        shape = draw(st.sampled_from(["pair"] * 8 + ["bare", "empty"]))
        key = draw(_query_text(name, plus))
        if shape == "bare":
            encoded.append(key)
        elif shape == "empty":
            encoded.append("")
        else:
            encoded.append(f"{key}={draw(_query_text(value, plus))}")
    return draw(st.sampled_from(["&"] * 6 + [";", "&&"])).join(encoded)


# -- bodies ----------------------------------------------------------------------------------


def _string_token(draw: st.DrawFn, text: str) -> str:
    out = ['"']
    for char in text:
        must = char in '"\\' or ord(char) < 0x20
        if must or (ord(char) < 0x10000 and draw(st.integers(0, 7)) == 0):
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out) + '"'


@st.composite
def json_text(draw: st.DrawFn, depth: int = 0, top: bool = True) -> str:
    kinds = ["object"] * (6 if top else 1) + ["string", "number", "literal"]
    if depth < 2:
        kinds += ["array", "object"]
    kind = draw(st.sampled_from(kinds))
    space = draw(st.sampled_from(["", "", " ", "\n"]))
    if kind == "object":
        keys = st.sampled_from(KEYS) | st.text(max_size=4)
        members = draw(st.lists(st.tuples(keys, json_text(depth + 1, False)), max_size=4))
        if members and draw(st.integers(0, 3)) == 0:  # a duplicate key
            members.append((members[0][0], draw(json_text(depth + 1, False))))
        inner = ("," + space).join(f"{_string_token(draw, k)}:{space}{v}" for k, v in members)
        return "{" + space + inner + space + "}"
    if kind == "array":
        items = draw(st.lists(json_text(depth + 1, False), max_size=3))
        return "[" + ",".join(items) + "]"
    if kind == "string":
        return _string_token(draw, draw(st.sampled_from(VALUES) | st.text(max_size=8)))
    if kind == "number":
        return draw(st.sampled_from(NUMBERS))
    return draw(st.sampled_from(["true", "false", "null"]))


SAFE_VALUES = ("/workspace/a.txt", "/workspace/b/c", "hello", "a b", "\u00e9t\u00e9", "")


@st.composite
def clean_json(draw: st.DrawFn, depth: int = 0) -> Any:
    """A JSON object every constraint of the attacker's grant accepts."""
    leaves = st.sampled_from(SAFE_VALUES) | st.integers(-1000, 1000) | st.booleans() | st.none()
    if depth >= 1:
        return draw(leaves)
    children = leaves | st.lists(clean_json(depth + 1), max_size=2) | st.dictionaries(
        st.sampled_from(("x", "y")), clean_json(depth + 1), max_size=2
    )
    extra = draw(st.dictionaries(st.sampled_from(("note", "n", "tags")), children, max_size=2))
    return {"path": draw(st.sampled_from(SAFE_VALUES[:2])), **extra}


@st.composite
def clean_bodies(draw: st.DrawFn, route: str) -> tuple[str, bytes]:
    import json

    document = draw(clean_json())
    if route in ("/files/form", "/files/values", "/public/echo") and draw(st.integers(0, 3)) > 0:
        flat = {k: v for k, v in document.items() if isinstance(v, str)}
        return "form", "&".join(f"{_form_encode(k, True)}={_form_encode(v, True)}" for k, v in flat.items()).encode()
    return "json", json.dumps(document, ensure_ascii=draw(st.booleans())).encode()


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    """``(kind, bytes)``: kind is ``json``, ``form``, ``multipart``, ``bytes`` or ``none``."""
    kind = draw(st.sampled_from(["json"] * 4 + ["form"] * 2 + ["multipart", "bytes", "none"]))
    if kind == "json":
        text = draw(json_text())
        encoding = draw(st.sampled_from(ENCODINGS))
        try:
            return kind, text.encode(encoding)
        except UnicodeEncodeError:  # a lone surrogate from st.text: send it as UTF-8 escapes
            return kind, text.encode("utf-8", "surrogatepass")
    if kind == "form":
        pairs = draw(_pairs(4))
        plus = draw(st.booleans())
        separator = draw(st.sampled_from(["&"] * 5 + [";"]))
        return kind, separator.join(
            f"{_form_encode(k, plus)}={_form_encode(v, plus)}" for k, v in pairs
        ).encode()
    if kind == "multipart":
        parts = "".join(
            f'--diffbound\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in draw(_pairs(3))
            if '"' not in k and "\r" not in k and "\n" not in k
        )
        return kind, (parts + "--diffbound--\r\n").encode("utf-8", "surrogatepass")
    if kind == "bytes":
        return kind, draw(st.binary(max_size=40))
    return kind, b""


_MATCHING = {
    "json": "application/json",
    "form": "application/x-www-form-urlencoded",
    "multipart": "multipart/form-data; boundary=diffbound",
}


@st.composite
def content_types(draw: st.DrawFn, body_kind: str) -> bytes | None:
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return None
    if choice < 6 and body_kind in _MATCHING:
        media = _MATCHING[body_kind]
    else:
        media = draw(st.sampled_from(MEDIA))
    case = draw(st.sampled_from(["same", "same", "upper", "title"]))
    media = media.upper() if case == "upper" else media.title() if case == "title" else media
    if media.lower().startswith("multipart/"):  # the boundary is case-sensitive
        media = media.split(";")[0] + "; boundary=diffbound"
    value = draw(st.sampled_from(SPACES)) + media.encode() + draw(st.sampled_from(SPACES))
    if draw(st.integers(0, 4)) == 0:
        value += draw(st.sampled_from([b"; charset=utf-8", b";x=y", b"; charset=utf-16"]))
    return value


# -- whole requests --------------------------------------------------------------------------

_TOOLS = [(t.server, t.name) for t in TOOLS]


@st.composite
def requests(draw: st.DrawFn) -> tuple[Wire, tuple[str, str] | None]:
    """A request and the tool the agent signs it for (``None``: no credentials).

    Half are honest in form (the route's own path, a matching body the grant accepts,
    signed for the route's tool), so that handlers run and their reads are compared;
    the other half use every trick.
    """
    tool, method, base = draw(st.sampled_from(ROUTES))
    honest_query = "ref=%2Fworkspace%2Fx" if tool != "item_get" else ""
    if draw(st.booleans()):
        kind, body = draw(clean_bodies(base)) if method == "POST" else ("none", b"")
        headers = (("Content-Type", _MATCHING[kind].encode()),) if body else ()
        wire = Wire(method, base + ("?" + honest_query if honest_query else ""), headers, body)
        return wire, ((BY_NAME[tool].server, tool) if tool is not None else SYNTHETIC_TOOL)
    # Every trick, each part independently (a request broken everywhere is only refused).
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "DELETE", "PUT", "HEAD"]))
    path = draw(paths(base)) if draw(st.booleans()) else base
    query = draw(queries()) if draw(st.booleans()) else honest_query
    with_body = method not in ("GET", "HEAD") or draw(st.integers(0, 5)) == 0
    if not with_body:
        kind, body = "none", b""
    elif draw(st.booleans()):
        kind, body = draw(bodies())
    else:
        kind, body = draw(clean_bodies(base))
    headers: list[tuple[str, bytes]] = []
    if body and draw(st.booleans()):
        content_type = draw(content_types(kind))
    else:
        content_type = _MATCHING[kind].encode() if kind in _MATCHING and body else None
    if content_type is not None:
        headers.append(("Content-Type", content_type))
        if draw(st.integers(0, 11)) == 0:  # a second Content-Type
            headers.append(("Content-Type", draw(st.sampled_from(MEDIA)).encode()))
    target = path + ("?" + query if query else "")
    chunked = draw(st.sampled_from([0, 0, 0, 1, 7])) if body else 0
    signing = draw(st.integers(0, 9))
    signed_for: tuple[str, str] | None
    if signing < 7 and tool is not None:
        signed_for = (BY_NAME[tool].server, tool)
    elif signing < 8:
        signed_for = SYNTHETIC_TOOL
    elif signing < 9:
        signed_for = draw(st.sampled_from(_TOOLS))
    else:
        signed_for = None
    return Wire(method, target, tuple(headers), body, chunked=chunked), signed_for


def describe_request(drawn: Any) -> str:
    wire, signed_for = drawn
    return f"{wire.method} {wire.target!r} {wire.headers!r} {wire.body[:200]!r} signed={signed_for}"
