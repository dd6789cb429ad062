"""ForbiddenPathGuard and SecretLeakGuard on the leaf rules (issue 8, findings 1 and 4)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chio_middleware.core.errors import AccessDenied
from chio_middleware.core.guards import ForbiddenPathGuard, GuardContext, SecretLeakGuard
from chio_middleware.core.models import CapabilityToken, ToolGrant
from chio_middleware.core.replay import MemoryReplayStore, as_async
from chio_middleware.core.request import RequestView
from chio_middleware.core.routing import RouteMatch

TOKEN = CapabilityToken.model_validate(
    {
        "id": "cap",
        "issuer": "00" * 32,
        "subject": "00" * 32,
        "scope": {"grants": []},
        "issued_at": 0,
        "expires_at": 10,
        "signature": "00" * 64,
    }
)


def context(arguments: dict[str, Any], body: bytes = b"") -> GuardContext:
    request = RequestView(method="POST", path="/x", query={}, headers=[], body=body)
    return GuardContext(
        request=request,
        route=RouteMatch(pattern="/x", tool_server="s", tool_name="t", params={}, binding=None),
        capability=TOKEN,
        grant=ToolGrant(server_id="s", tool_name="t", operations=["invoke"]),
        grant_index=0,
        subject="00" * 32,
        arguments=arguments,
        now=0,
        store=as_async(MemoryReplayStore()),
    )


FORBIDDEN = ForbiddenPathGuard(["/etc/**", "**/.ssh/**", "/srv/secret"])


@pytest.mark.parametrize(
    ("arguments", "denied"),
    [
        ({"path": "/etc/passwd"}, True),
        ({"path": "/workspace/a", "backup_path": "/etc/shadow"}, True),  # every leaf
        ({"note": "see /root/.ssh/id_rsa"}, True),  # "**" spans any leading text
        ({"note": "/root/.ssh/id_rsa"}, True),
        ({"src": "file:///etc/passwd"}, True),  # a file: URL, as its path
        ({"src": "file:///%65tc/passwd"}, True),  # ... percent-decoded
        ({"path": "/etc/\npasswd"}, True),  # '**' spans newlines too
        ({"path": "C:\\x\\..\\..\\..\\etc"}, True),  # climbs above its root
        ({"path": "/srv/./secret"}, True),
        ({"dir": 7, "path": "/tmp/x"}, False),  # a number is checked as "7", which is fine
        ({"path": "/workspace/ok"}, False),
        ({"a": {"b": ["/workspace", "/etc/hosts"]}}, True),
        ({"path": "/%65tc/passwd"}, True),  # as a second decoder would read it
        ({"path": "/workspace/%2e%2e/%2e%2e/%2e%2e/x"}, True),  # climbs, once decoded
        ({"path": "/workspace/100%"}, False),  # a bad escape stays as it is
    ],
)
def test_forbidden_paths_on_every_path_like_leaf(arguments: dict, denied: bool) -> None:
    if denied:
        with pytest.raises(AccessDenied) as info:
            FORBIDDEN.check(context(arguments))
        assert info.value.guard == "ForbiddenPathGuard"
    else:
        assert FORBIDDEN.check(context(arguments)) is None


def test_forbidden_path_globs_are_linear_on_long_paths() -> None:
    long_path = "/" + "a/" * 30_000 + ".ss"
    assert FORBIDDEN.check(context({"path": long_path})) is None
    with pytest.raises(AccessDenied):
        FORBIDDEN.check(context({"path": long_path + "h/k"}))


SECRET = "AKIAIOSFODNN7EXAMPLE"
ESCAPED = "".join(f"\\u{ord(ch):04x}" for ch in SECRET)


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"a": SECRET}).encode(),
        ('{"a": "' + ESCAPED + '"}').encode(),  # \u-escaped, JSON not parsed into arguments
        ('["' + ESCAPED + '"]').encode(),  # a non-object body
        ('{"' + ESCAPED + '": 1}').encode(),  # in a key
        ('{"a": "' + ESCAPED + '", "a": "x"}').encode(),  # hidden under a repeated key
        json.dumps({"a": SECRET}).encode("utf-16"),
        json.dumps({"a": SECRET}).encode("utf-16-be"),
        json.dumps({"a": SECRET}).encode("utf-32"),
        json.dumps({"a": SECRET}).encode("utf-32-be"),
        b"\xef\xbb\xbf" + json.dumps({"a": SECRET}).encode(),
        ("a=" + "".join(f"%{ord(ch):02X}" for ch in SECRET)).encode(),  # percent-encoded
        b"\xff\xfe garbage " + SECRET.encode() + b"\x80",  # not valid UTF-8 around it
    ],
)
def test_secrets_are_found_however_the_body_encodes_them(body: bytes) -> None:
    with pytest.raises(AccessDenied, match=r"AWS access key id") as info:
        SecretLeakGuard().check(context({}, body))
    assert SECRET not in info.value.message


def test_secrets_in_decoded_arguments_and_clean_bodies() -> None:
    with pytest.raises(AccessDenied):
        SecretLeakGuard().check(context({"q": ["x", {"k": SECRET}]}))
    with pytest.raises(AccessDenied):
        SecretLeakGuard().check(context({SECRET: "x"}))
    assert SecretLeakGuard().check(context({"q": "hello"}, b'{"q": "hello"}')) is None
    assert SecretLeakGuard().check(context({}, "h\u00e9llo".encode("utf-16"))) is None
    deep = b"[" * 100_000 + b"]" * 100_000
    assert SecretLeakGuard().check(context({}, deep)) is None  # no recursion error


@pytest.mark.parametrize(
    "body",
    [
        b"-----BEGIN+RSA+PRIVATE+KEY-----",  # form-encoded with + only (no %)
        b"-----BEGIN%20RSA%20PRIVATE%20KEY-----",  # percent-encoded only
        b"\xef\xbb\xbf-----BEGIN+PRIVATE+KEY-----",  # after a BOM
    ],
)
def test_a_body_that_decodes_to_a_secret_is_refused(body: bytes) -> None:
    """Whatever decodes the body next (a form parser reads + as a space) must not find a
    secret the guard missed: each way of skipping the decoded text is caught here."""
    with pytest.raises(AccessDenied):
        SecretLeakGuard().check(context({}, body))


# The literal pre-check of SecretLeakGuard skips a search only when no match can exist: the
# guard's verdict is the plain searches' on texts made of secret-shaped fragments.
_FRAGMENTS = [
    "-----BEGIN ", "RSA ", "PRIVATE KEY", "-----", "AKIA", "ASIA", "ANPA", "AROA",
    "aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "aw\u017f_secret_access_\u212aey", "= ",
    "AIza", '"private_key_id"', ": ", '"', "ghp_", "gho_", "github_pat_", "xoxb-", "sk_live_",
    "rk_live_", "AccountKey=", "==", "sk-", "sk-proj-", "\n", " ", "_", "-",
]
_RUNS = st.sampled_from(["A" * 40, "a1" * 20, "0f" * 20, "Z9" * 45, "b" * 60, "A" * 16])


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS) | _RUNS | st.text(max_size=6), max_size=12))
def test_the_secret_pre_check_never_changes_the_verdict(pieces: list[str]) -> None:
    from chio_middleware.core.guards import _SECRET_PATTERNS, secret_kind

    text = "".join(pieces)
    searched = next((kind for kind, pattern in _SECRET_PATTERNS if pattern.search(text)), None)
    assert secret_kind(text) == searched


def test_the_secret_pre_check_sees_every_kind() -> None:
    from chio_middleware.core.guards import _SECRET_PATTERNS, secret_kind

    samples = {
        "private key": "-----BEGIN OPENSSH PRIVATE KEY-----",
        "AWS access key id": "AKIA" + "A" * 16,
        "AWS secret access key": "aw\u017f_secret_access_key = " + "a" * 40,  # long s folds
        "Google API key": "AIza" + "a" * 35,
        "GCP service account key": '"private_key_id": "' + "0f" * 20 + '"',
        "GitHub token": "github_pat_" + "a" * 60,
        "Slack token": "xoxb-" + "a" * 10,
        "Stripe secret key": "rk_live_" + "a" * 20,
        "Azure storage key": "AccountKey=" + "A" * 86 + "==",
        "OpenAI API key": "sk-proj-" + "a" * 32,
    }
    assert set(samples) == {kind for kind, _ in _SECRET_PATTERNS}
    for kind, text in samples.items():
        assert secret_kind(text) == kind, kind
