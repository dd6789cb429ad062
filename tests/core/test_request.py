from __future__ import annotations

import pytest

from chio_middleware.core.errors import BadRequest
from chio_middleware.core.request import RequestView, parse_query, split_target
from tests.vectors import cases


@pytest.mark.parametrize("case", cases("chio_http/request_hash_v1.json"))
def test_split_target_decodes_the_vector_urls(case: dict) -> None:
    assert split_target(case["url"]) == (case["path"], case["query"])
    assert split_target("http://host:8000" + case["url"]) == (case["path"], case["query"])


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("//notes/a?x=1", ("//notes/a", {"x": "1"})),
        ("/a+b?q=a+b&flag", ("/a+b", {"q": "a b", "flag": ""})),
        ("/p#frag", ("/p", {})),
        ("/p?&&a=1&", ("/p", {"a": "1"})),
    ],
)
def test_split_target_edges(target: str, expected: tuple[str, dict[str, str]]) -> None:
    assert split_target(target) == expected


@pytest.mark.parametrize("query", ["a=1&a=2", "a=%ff", "%c3=1"])
def test_parse_query_refuses(query: str) -> None:
    with pytest.raises(BadRequest):
        parse_query(query)


def test_with_body_is_dataclasses_replace() -> None:
    import dataclasses

    view = RequestView(
        method="POST",
        path="/a",
        query={"q": "1"},
        headers=[("x", b"y")],
        body=b"old",
        raw_path="/a",
        route_path="/a",
        client="1.2.3.4:5",
        extra={"k": 1},
    )
    assert view.with_body(b"new") == dataclasses.replace(view, body=b"new")
    assert [f.name for f in dataclasses.fields(RequestView)] == [
        "method", "path", "query", "headers", "body", "raw_path", "route_path", "client", "extra"
    ]
