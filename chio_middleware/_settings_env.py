"""What ``ChioSettings`` does with the environment and with secrets, apart from the fields.

- :class:`ChioEnvSource` reads ``CHIO_*`` variables as pydantic-settings does, except that
  a list of strings may also be comma-separated (``CHIO_TRUSTED_ISSUERS=ab12...,cd34...``;
  a value starting with ``[`` is JSON), and a value that cannot be read is a
  ``ValidationError`` naming the variable instead of an opaque ``SettingsError``.
- :func:`check_environment` refuses ``CHIO_*`` variables that are no setting, naming the
  closest one (``CHIO_RATE_LIMITS``: did you mean ``CHIO_RATE_LIMIT``?).
- :func:`check_names` does the same for keyword arguments (and so for a Flask app's
  ``CHIO_*`` config keys): ``rate_limits``: did you mean ``rate_limit``?
- :func:`hide_secrets` wraps secret inputs in ``SecretStr`` before any validator sees them,
  so no error (``str``, ``repr``, ``errors()``, ``json()``) can carry a secret's characters.
"""

from __future__ import annotations

import difflib
import fnmatch
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, get_args, get_origin

from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import EnvSettingsSource

__all__ = [
    "SECRET_SETTINGS",
    "ChioEnvSource",
    "check_environment",
    "check_names",
    "hide_secrets",
]

#: Settings whose values are secrets: never echoed, in any error.
SECRET_SETTINGS = ("signing_key",)


class _Hidden:
    """Stands for a secret input of the wrong type: fails validation, shows nothing."""

    def __repr__(self) -> str:
        return "'**********'"


def hide_secrets(data: Any, fields: Iterable[str]) -> Any:
    """``data`` (a settings input mapping) with its secrets wrapped in ``SecretStr``.

    The value of a name that is no setting is hidden too: it is refused anyway, and it may
    be a secret under a misspelled name (``signing_kye=...``).
    """
    if not isinstance(data, Mapping):
        return data
    known = set(fields)
    hidden = dict(data)
    for name, value in data.items():
        if name in known and name not in SECRET_SETTINGS:
            continue
        if value is None or isinstance(value, SecretStr):
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        hidden[name] = SecretStr(value) if isinstance(value, str) else _Hidden()
    return hidden


def _is_string_list(field: FieldInfo) -> bool:
    """True for ``list[str]`` (optionally ``| None``): the settings a comma list can give."""
    annotation = field.annotation
    if get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        annotation = members[0] if len(members) == 1 else None
    return get_origin(annotation) is list and get_args(annotation) == (str,)


class _BadVariable(Exception):
    """A variable's value cannot be read (deliberately not a ``ValueError``, see below)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field_name = field_name
        self.message = message


def _error(title: str, loc: str, kind: str, message: str) -> ValidationError:
    return ValidationError.from_exception_data(
        title,
        [
            {
                "type": PydanticCustomError(kind, "{message}", {"message": message}),
                "loc": (loc,),
                "input": "<hidden>",
            }
        ],
        hide_input=True,
    )


class ChioEnvSource(EnvSettingsSource):
    """The environment source of ``ChioSettings``: JSON or comma-separated lists."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        """JSON, or for a list of strings also ``a,b,c`` (items stripped, none empty)."""
        if not isinstance(value, str):
            return super().decode_complex_value(field_name, field, value)
        variable = (self.env_prefix + field_name).upper()
        text = value.strip()
        string_list = _is_string_list(field)
        if text.startswith("[") or not string_list:
            try:
                return super().decode_complex_value(field_name, field, value)
            except ValueError as exc:
                also = " or comma-separated values" if string_list else ""
                # Not a ValueError: pydantic-settings would replace this message with its own.
                raise _BadVariable(
                    field_name, f"{variable} is not valid JSON{also} ({exc})"
                ) from None
        items = [item.strip() for item in text.split(",")]
        if not text or "" in items:
            what = "is empty" if not text else "has an empty item"
            raise _BadVariable(
                field_name,
                f"{variable} {what}: give comma-separated values or JSON ('[]' for none)",
            )
        return items

    def __call__(self) -> dict[str, Any]:
        try:
            return super().__call__()
        except _BadVariable as exc:
            title = self.settings_cls.__name__
            raise _error(title, exc.field_name, "env_value", exc.message) from None


def check_environment(
    environ: Mapping[str, str], *, prefix: str, fields: Iterable[str], ignore: Iterable[str] = ()
) -> None:
    """Raise ``ValueError`` for a ``prefix*`` variable that names no setting.

    Names are compared case-insensitively, as the settings read them. ``ignore`` holds
    names or globs (``CHIO_SIDECAR_*``) of variables that belong to other tools.
    """
    prefix = prefix.upper()
    known = {prefix + name.upper() for name in fields}
    patterns = [pattern.upper() for pattern in ignore]
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(prefix) or upper in known:
            continue
        if any(fnmatch.fnmatchcase(upper, pattern) for pattern in patterns):
            continue
        close = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "no setting has a similar name"
        raise ValueError(
            f"unknown environment variable {name}: {hint} (list the variables of other "
            f"tools in {prefix}IGNORE_ENV)"
        )


def check_names(data: Any, fields: Iterable[str]) -> None:
    """Raise ``ValueError`` naming each key of ``data`` that is no setting, and the closest."""
    if not isinstance(data, Mapping):
        return
    known = sorted(fields)
    problems = []
    for name in data:
        if not isinstance(name, str) or name in known:
            continue
        close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "no setting has a similar name"
        problems.append(f"unknown setting {name!r}: {hint}")
    if problems:
        raise ValueError("; ".join(problems))
