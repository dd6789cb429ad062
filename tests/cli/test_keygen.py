"""``keygen``."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from chio_middleware.core.crypto import PublicKey, SigningKey
from tests.cli.conftest import run, run_script


def test_without_out_prints_seed_and_public_key_as_key_value_lines() -> None:
    result = run("keygen")
    assert result.status == 0
    seed_line, public_line = result.out.splitlines()
    assert seed_line.startswith("seed=") and public_line.startswith("public_key=")
    key = SigningKey.from_seed_hex(seed_line.removeprefix("seed="))
    assert key.public_key == PublicKey.from_hex(public_line.removeprefix("public_key="))


def test_json_output() -> None:
    document = json.loads(run("keygen", "--json").out)
    assert set(document) == {"public_key", "seed"}
    assert SigningKey.from_seed_hex(document["seed"]).public_key.hex == document["public_key"]


def test_two_keys_differ() -> None:
    assert run("keygen").out != run("keygen").out


def test_out_writes_the_seed_with_mode_0600_and_prints_only_the_public_key(tmp_path: Path) -> None:
    path = tmp_path / "kernel.key"
    result = run_script("keygen", "--out", str(path))
    assert result.status == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = SigningKey.from_seed_hex(path.read_text())
    assert result.out == key.public_key.hex + "\n"
    assert key.seed_hex() not in result.out + result.err


def test_out_refuses_to_replace_a_file_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "kernel.key"
    path.write_text("precious")
    result = run("keygen", "--out", str(path))
    assert result.status == 2
    assert result.err == (
        f"chio-middleware keygen: error: --out {path}: the file exists (use --force to replace it)\n"
    )
    assert path.read_text() == "precious"
    assert run("keygen", "--out", str(path), "--force").status == 0
    SigningKey.from_seed_hex(path.read_text())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_out_in_a_missing_directory(tmp_path: Path) -> None:
    result = run("keygen", "--out", str(tmp_path / "nope" / "k.key"))
    assert result.status == 2
    assert "No such file or directory" in result.err
