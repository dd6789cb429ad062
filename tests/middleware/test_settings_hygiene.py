"""Settings hygiene: secrets never echoed, unknown CHIO_* variables refused, comma lists."""

from __future__ import annotations

import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from pydantic import ValidationError

from chio_middleware import ChioSettings
from chio_middleware.asgi import ChioMiddleware

from .harness import ISSUER, KERNEL

#: A bad secret that looks like a real seed: 64 hex characters from a hash, then mangled.
SEED = hashlib.sha256(b"a seed that must never be printed").hexdigest()
BAD_SECRETS = {
    "one character short": SEED[:-1],
    "one character long": SEED + "7",
    "a non-hex character": SEED[:40] + "g" + SEED[41:],
    "seed and public key pasted together": SEED + hashlib.sha256(SEED.encode()).hexdigest(),
    "a line break inside": SEED[:32] + "\n" + SEED[32:],
    "quoted": f'"{SEED}"',
}


def _windows(secret: str, size: int = 6) -> set[str]:
    text = secret.replace("\n", "")
    return {text[i : i + size] for i in range(len(text) - size + 1)}


def _assert_hidden(error: ValidationError, secret: str) -> None:
    """No 6-character piece of ``secret`` appears in any rendering of ``error``."""
    renderings = [str(error), repr(error), error.json(), repr(error.errors())]
    for window in _windows(secret):
        for text in renderings:
            assert window not in text, f"{window!r} of the secret is echoed: {text}"


@pytest.fixture(autouse=True)
def _no_chio_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("CHIO_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("secret", list(BAD_SECRETS.values()), ids=list(BAD_SECRETS))
def test_a_bad_signing_key_argument_is_never_echoed(secret: str) -> None:
    with pytest.raises(ValidationError) as info:
        ChioSettings(signing_key=secret, receipt_sink="memory")
    assert "signing_key" in str(info.value)
    _assert_hidden(info.value, secret)


@pytest.mark.parametrize("secret", list(BAD_SECRETS.values()), ids=list(BAD_SECRETS))
def test_a_bad_chio_signing_key_variable_is_never_echoed(
    secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHIO_SIGNING_KEY", secret)
    with pytest.raises(ValidationError) as info:
        ChioSettings(receipt_sink="memory")
    assert "signing_key" in str(info.value)
    _assert_hidden(info.value, secret)
    # the middleware reads the same environment and fails the same way
    with pytest.raises(ValidationError) as info:
        ChioMiddleware(lambda *a: None)  # type: ignore[arg-type,return-value]
    _assert_hidden(info.value, secret)


@pytest.mark.parametrize(
    "values",
    [
        {"signing_key": SEED.encode() + b"00"},  # bytes
        {"signing_key": [SEED]},  # a list
        {"signing_kye": SEED},  # a misspelled name
        {"signing_key": SEED, "signing_key_file": "kernel.key"},  # two key sources
        {"signing_key": SEED, "replay_store": "mysql://x"},  # another setting is wrong
        {"signing_key": SEED, "unknown_setting": SEED},  # and under an unknown name too
    ],
    ids=["bytes", "list", "misspelled", "two-sources", "other-error", "unknown-name"],
)
def test_a_valid_or_misplaced_secret_is_not_echoed_by_any_other_error(
    values: dict[str, Any],
) -> None:
    with pytest.raises(ValidationError) as info:
        ChioSettings(**values, receipt_sink="memory")
    _assert_hidden(info.value, SEED)


def test_a_bad_seed_file_is_named_not_printed(tmp_path: Path) -> None:
    key_file = tmp_path / "kernel.key"
    key_file.write_text(SEED[:-1] + "\n")
    with pytest.raises(ValidationError) as info:
        ChioSettings(signing_key_file=key_file, receipt_sink="memory")
    assert "signing_key_file" in str(info.value) and str(key_file) in str(info.value)
    _assert_hidden(info.value, SEED)


def test_the_secret_is_usable_and_hidden_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHIO_SIGNING_KEY", KERNEL.seed_hex())
    settings = ChioSettings(receipt_sink="memory")
    assert settings.load_signing_key() is not None
    assert settings.load_signing_key().public_key == KERNEL.public_key  # type: ignore[union-attr]
    for window in _windows(KERNEL.seed_hex(), 8):
        assert window not in repr(settings) and window not in str(settings.model_dump())


# -- unknown CHIO_* variables ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "suggestion"),
    [
        ("CHIO_RATE_LIMITS", "did you mean CHIO_RATE_LIMIT?"),
        ("CHIO_TRUSTED_ISSUER", "did you mean CHIO_TRUSTED_ISSUERS?"),
        ("chio_signing_keyfile", "did you mean CHIO_SIGNING_KEY_FILE?"),
        ("CHIO_REPLAY_STOR", "did you mean CHIO_REPLAY_STORE?"),
        ("CHIO_ZEBRA", "no setting has a similar name"),
    ],
)
def test_an_unknown_variable_is_an_error_naming_the_closest_setting(
    variable: str, suggestion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "5/second")
    with pytest.raises(ValidationError) as info:
        ChioSettings(receipt_sink="memory")
    message = str(info.value)
    assert f"unknown environment variable {variable}" in message
    assert suggestion in message
    assert "5/second" not in message


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("rate_limits", "did you mean 'rate_limit'?"),
        ("trusted_issuer", "did you mean 'trusted_issuers'?"),
        ("zebra", "no setting has a similar name"),
    ],
)
def test_an_unknown_keyword_is_an_error_naming_the_closest_setting(
    name: str, suggestion: str
) -> None:
    with pytest.raises(ValidationError) as info:
        ChioSettings(**{name: "5/second"}, receipt_sink="memory")
    assert f"unknown setting {name!r}: {suggestion}" in str(info.value)
    assert "5/second" not in str(info.value) + repr(info.value.errors())


def test_a_misspelled_flask_config_key_names_the_closest_setting() -> None:
    import flask

    from chio_middleware.integrations.flask import Chio

    app = flask.Flask(__name__)
    app.config.update(CHIO_RECEIPT_SINK="memory", CHIO_RATE_LIMITS="5/second")
    with pytest.raises(ValidationError, match="did you mean 'rate_limit'"):
        Chio(app)


def test_known_variables_in_any_case_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("chio_proof_ttl", "120")
    monkeypatch.setenv("CHIO_RATE_LIMIT", "5/second")
    monkeypatch.setenv("CHIOX_UNRELATED", "1")  # another prefix: not ours
    settings = ChioSettings(receipt_sink="memory")
    assert (settings.proof_ttl, settings.rate_limit) == (120, "5/second")


def test_variables_of_other_tools_can_be_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHIO_SIDECAR_CONTROL_TOKEN", "x")
    monkeypatch.setenv("CHIO_DOCTOR_SKIP_NETWORK", "1")
    with pytest.raises(ValidationError, match="CHIO_DOCTOR_SKIP_NETWORK"):
        ChioSettings(receipt_sink="memory", ignore_env=["CHIO_SIDECAR_*"])
    settings = ChioSettings(
        receipt_sink="memory", ignore_env=["chio_sidecar_*", "CHIO_DOCTOR_SKIP_NETWORK"]
    )
    assert settings.ignore_env == ["chio_sidecar_*", "CHIO_DOCTOR_SKIP_NETWORK"]
    monkeypatch.setenv("CHIO_IGNORE_ENV", "CHIO_SIDECAR_*,CHIO_DOCTOR_*")
    assert ChioSettings(receipt_sink="memory").ignore_env == ["CHIO_SIDECAR_*", "CHIO_DOCTOR_*"]


# -- list settings: JSON or comma-separated ---------------------------------------------------

KEY_A, KEY_B = ISSUER.public_key.hex, KERNEL.public_key.hex
#: Two valid items of every list-of-strings setting.
LIST_SAMPLES: dict[str, tuple[str, str]] = {
    "trusted_issuers": (KEY_A, KEY_B),
    "trusted_kernel_keys": (KEY_B, KEY_A),
    "revoked_capabilities": ("cap-1", "0192-cap-2"),
    "forbidden_paths": ("/etc/**", "**/.ssh/**"),
    "guards": ("tests.middleware.test_behaviour:NoTitles", "json:dumps"),
    "ignore_env": ("CHIO_SIDECAR_*", "CHIO_DOCTOR_SKIP_NETWORK"),
    "public_paths": ("/health", "/docs"),
}


def _list_settings() -> list[str]:
    names = []
    for name, field in ChioSettings.model_fields.items():
        annotation = field.annotation
        if get_origin(annotation) in (typing.Union, types.UnionType):
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        if get_origin(annotation) is list and get_args(annotation) == (str,):
            names.append(name)
    return names


def test_every_list_setting_is_covered_below() -> None:
    missing = set(_list_settings()) - set(LIST_SAMPLES)
    assert not missing, f"add two sample values of {sorted(missing)} to LIST_SAMPLES"


@pytest.mark.parametrize("name", _list_settings())
@pytest.mark.parametrize(
    ("form", "one", "two"),
    [
        ("json", lambda a: json.dumps([a]), lambda a, b: json.dumps([a, b])),
        ("comma", lambda a: a, lambda a, b: f"{a},{b}"),
        ("comma with spaces", lambda a: f"  {a} ", lambda a, b: f" {a} , {b} "),
    ],
)
def test_list_settings_read_json_or_comma_separated_values(
    name: str, form: str, one: Any, two: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = LIST_SAMPLES[name]
    variable = f"CHIO_{name.upper()}"
    monkeypatch.setenv(variable, one(a))
    assert getattr(ChioSettings(receipt_sink="memory"), name) == [a]
    monkeypatch.setenv(variable, two(a, b))
    assert getattr(ChioSettings(receipt_sink="memory"), name) == [a, b]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "CHIO_TRUSTED_ISSUERS is empty"),
        ("   ", "CHIO_TRUSTED_ISSUERS is empty"),
        (f"{KEY_A},", "CHIO_TRUSTED_ISSUERS has an empty item"),
        (f"{KEY_A},,{KEY_B}", "CHIO_TRUSTED_ISSUERS has an empty item"),
        (f'["{KEY_A}"', "CHIO_TRUSTED_ISSUERS is not valid JSON or comma-separated values"),
    ],
)
def test_unreadable_list_values_are_validation_errors_naming_the_variable(
    value: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHIO_TRUSTED_ISSUERS", value)
    with pytest.raises(ValidationError) as info:
        ChioSettings(receipt_sink="memory")
    assert message in str(info.value)
    assert "trusted_issuers" in str(info.value)


def test_an_empty_json_list_is_how_to_say_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHIO_FORBIDDEN_PATHS", "[]")
    assert ChioSettings(receipt_sink="memory").forbidden_paths == []


def test_a_bad_item_is_still_checked_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHIO_TRUSTED_ISSUERS", f"{KEY_A},zz")
    with pytest.raises(ValidationError, match="trusted_issuers"):
        ChioSettings(receipt_sink="memory")
    monkeypatch.setenv("CHIO_TRUSTED_ISSUERS", KEY_A)
    monkeypatch.setenv("CHIO_GUARDS", "no_colon")
    with pytest.raises(ValidationError, match="guards"):
        ChioSettings(receipt_sink="memory")


def test_routes_stay_json_and_a_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHIO_ROUTES", "POST /notes srv-notes write_note")
    with pytest.raises(ValidationError) as info:
        ChioSettings(receipt_sink="memory")
    assert "CHIO_ROUTES is not valid JSON" in str(info.value)
    assert "comma" not in str(info.value)
    route = {"method": "POST", "path": "/notes", "tool_server": "s", "tool_name": "t"}
    monkeypatch.setenv("CHIO_ROUTES", json.dumps([route]))
    assert ChioSettings(receipt_sink="memory").routes[0].tool_name == "t"
