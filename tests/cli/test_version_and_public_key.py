"""``--version`` and ``keygen --public KEYFILE``."""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import chio_middleware
from chio_middleware.core.crypto import SigningKey
from tests.cli.conftest import run, run_process, run_script

KEY = SigningKey.from_seed_hex("3c" * 32)


def test_version_prints_the_installed_package_version() -> None:
    installed = version("chio-middleware")
    assert installed == chio_middleware.__version__  # the two never drift apart
    for result in (
        run("--version"),
        run_script("--version"),
        run_process([sys.executable, "-m", "chio_middleware.cli", "--version"]),
    ):
        assert (result.status, result.err) == (0, "")
        assert result.out.strip().endswith(f" {installed}")
    assert run_script("--version").out == f"chio-middleware {installed}\n"


def test_public_prints_the_public_key_of_a_keygen_out_file(tmp_path: Path) -> None:
    path = tmp_path / "kernel.key"
    made = run_script("keygen", "--out", str(path))
    assert made.status == 0
    result = run_script("keygen", "--public", str(path))
    assert (result.status, result.err) == (0, "")
    assert result.out == made.out  # the public key keygen printed when it wrote the file
    assert SigningKey.from_seed_hex(path.read_text()).public_key.hex + "\n" == result.out
    assert path.read_text().strip() not in result.out


@pytest.mark.parametrize(
    "content",
    [KEY.seed_hex(), KEY.seed_hex() + "\n", "0x" + KEY.seed_hex(), f'{{"seed": "{KEY.seed_hex()}"}}'],
    ids=["hex", "hex-newline", "0x-hex", "keygen-json"],
)
def test_public_reads_every_key_file_form(tmp_path: Path, content: str) -> None:
    path = tmp_path / "agent.key"
    path.write_text(content)
    assert run("keygen", "--public", str(path)).out == KEY.public_key.hex + "\n"
    document = json.loads(run("keygen", "--public", str(path), "--json").out)
    assert document == {"public_key": KEY.public_key.hex}


def test_public_reads_standard_input() -> None:
    result = run("keygen", "--public", "-", stdin=KEY.seed_hex() + "\n")
    assert (result.status, result.out) == (0, KEY.public_key.hex + "\n")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        ("", "not a key file (signing key seed must be 64 hex characters, got 0)"),
        (KEY.seed_hex()[:-2], "not a key file (signing key seed must be 64 hex characters, got 62)"),
        (KEY.seed_hex()[:-1] + "z", "not a key file (signing key seed is not valid hex)"),
        ('{"public_key": "ab"}', "not a key file"),
        ("p256:" + "ab" * 33, "only Ed25519 is supported"),
        ("\x00\xff binary", "not a key file"),
    ],
    ids=["missing", "empty", "short", "not-hex", "json-without-seed", "p256", "binary"],
)
def test_a_bad_key_file_is_a_clear_error_that_echoes_nothing(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "bad.key"
    if content is not None:
        path.write_text(content)
    result = run_script("keygen", "--public", str(path))
    assert result.status == 2
    assert result.out == ""
    assert result.err.startswith(f"chio-middleware keygen: error: --public {path}: ")
    assert expected in result.err
    if content and len(content) > 8:
        assert content[4:12] not in result.err  # no piece of the (secret) file content


def test_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    result = run("keygen", "--public", str(tmp_path))
    assert result.status == 2
    assert result.err == f"chio-middleware keygen: error: --public {tmp_path}: is a directory\n"


def test_public_and_out_are_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    path.write_text(KEY.seed_hex())
    result = run("keygen", "--public", str(path), "--out", str(tmp_path / "new.key"))
    assert result.status == 2
    assert "not allowed with argument" in result.err
    assert not (tmp_path / "new.key").exists()
