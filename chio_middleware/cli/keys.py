"""``keygen``: a new Ed25519 key (PROTOCOL.md 1.2), or the public key of an existing one."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..core.canonical import canonical_json
from ..core.crypto import SigningKey
from ._common import EXIT_OK, CliError, Env, read_signing_key

__all__ = ["register"]

DESCRIPTION = """\
Generate an Ed25519 key: a 32-byte seed (the private key, hex) and its public key (hex).

With --out FILE the seed is written to FILE (mode 0600, one line of hex; the form every
--*-key FILE option reads) and only the public key is printed. Without --out both are
printed, as key=value lines (seed=..., public_key=...) or with --json as one JSON object
{"public_key": ..., "seed": ...}. The seed is a secret: keep it out of logs and shells'
history.

With --public KEYFILE no key is generated: the public key of the seed in KEYFILE (as
--out writes it, or keygen --json's output; - reads standard input) is printed, hex, or
with --json as {"public_key": ...}. The seed itself is never printed.
"""


def register(commands: Any) -> None:
    """Add the ``keygen`` command."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "keygen",
        help="generate an Ed25519 key",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--out", metavar="FILE", help="write the seed to FILE (mode 0600)")
    source.add_argument(
        "--public", metavar="KEYFILE", help="print the public key of the seed in KEYFILE"
    )
    parser.add_argument("--force", action="store_true", help="replace FILE if it exists")
    parser.add_argument("--json", action="store_true", help="print JSON instead of key=value")
    parser.set_defaults(handler=run)


def _write_secret(path: str, content: bytes, *, force: bool) -> None:
    """Create ``path`` with mode 0600 (refusing to replace it unless ``force``)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        if force and os.path.lexists(path):
            os.unlink(path)
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise CliError(f"--out {path}: the file exists (use --force to replace it)") from None
    except OSError as exc:
        raise CliError(f"--out {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, content)
    finally:
        os.close(fd)


def run(args: argparse.Namespace, env: Env) -> int:
    """Generate the key and print or write it (``--public``: print an existing key's)."""
    if args.public:
        public_key = read_signing_key(args.public, "--public", env).public_key.hex
        env.out(canonical_json({"public_key": public_key}).decode() if args.json else public_key)
        return EXIT_OK
    key = SigningKey.generate()
    public = key.public_key.hex
    if args.out:
        _write_secret(args.out, key.seed_hex().encode("ascii") + b"\n", force=args.force)
        env.out(canonical_json({"public_key": public}).decode() if args.json else public)
    elif args.json:
        env.out(canonical_json({"public_key": public, "seed": key.seed_hex()}).decode())
    else:
        env.out(f"seed={key.seed_hex()}")
        env.out(f"public_key={public}")
    return EXIT_OK
