"""``export``: receipt logs as signed core ChioReceipts (PROTOCOL.md 7.2), and their check."""

from __future__ import annotations

import argparse
import os
from collections.abc import Collection, Sequence
from typing import TextIO

from ..core.canonical import JsonParseError, parse_json
from ..core.core_receipts import (
    CoreReceiptInvalid,
    core_receipt_json,
    is_core_receipt,
    to_core_receipt,
    verify_core_receipt,
)
from ..core.crypto import PublicKey
from ..core.receipts import ReceiptInvalid, parse_receipt, verify_receipt
from ..sinks.jsonl import Problem, VerifyReport, read_log_lines
from ._common import EXIT_FAILED, EXIT_OK, CliError, Env, read_signing_key

__all__ = ["is_core_export", "register", "verify_core_export"]

DESCRIPTION = """\
Convert the receipts of one or more receipt logs (FILE, FILE.1 ... as given, in order)
into the reference kernel's core ChioReceipt form, one canonical JSON object per line,
exactly as chio-http-core's to_chio_receipt_with_keypair does: tool server "http", tool
"<METHOD> <route>", the HttpReceipt id bound as metadata.chio_receipt_signing_nonce, a
content-addressed id and a new signature over {"id", "body"}. A kernel's receipt store
can then hold HTTP decisions beside its own tool calls.

--key is the middleware's signing key (a keygen key file): the reference signs the core
receipt with the key that signed the HttpReceipt, so a receipt signed by another key is
refused. Only receipts whose signature verifies are exported (re-signing a modified line
would launder it); every refused line is named on stderr and the exit status is then 1.
Check the output with: chio-middleware verify --kernel-key HEX OUT.
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``export`` command."""
    parser = commands.add_parser(
        "export",
        help="export receipt logs as signed core ChioReceipts",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", metavar="LOG", nargs="+", help="a receipt log (JSONL)")
    parser.add_argument(
        "--format",
        choices=["chio-receipt"],
        required=True,
        help="the output format: chio-receipt (core ChioReceipt JSONL)",
    )
    parser.add_argument("--key", metavar="FILE", required=True, help="the signing key file")
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write here instead of stdout (overwritten)"
    )
    parser.set_defaults(handler=run)


def _export(args: argparse.Namespace, env: Env, out: TextIO) -> tuple[int, int]:
    key = read_signing_key(args.key, "--key", env)
    exported = refused = 0
    for path in args.files:
        if os.path.isdir(path):
            raise CliError(f"{path}: is a directory, not a receipt log")
        try:
            lines = list(read_log_lines(path))
        except FileNotFoundError:
            raise CliError(f"{path}: no such file") from None
        except OSError as exc:
            raise CliError(f"{path}: {exc.strerror}") from None
        for line in lines:
            if not line.raw.strip():
                continue
            try:
                receipt = verify_receipt(parse_receipt(line.raw), trusted_keys=[key.public_key])
                core = to_core_receipt(receipt, key)
            except (ReceiptInvalid, CoreReceiptInvalid) as exc:
                refused += 1
                env.err(f"{line.where}: not exported: {exc}")
                continue
            out.write(core_receipt_json(core).decode("utf-8") + "\n")
            exported += 1
    return exported, refused


def run(args: argparse.Namespace, env: Env) -> int:
    """Convert and write; 1 when a line was refused."""
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            exported, refused = _export(args, env, out)
            out.flush()
            os.fsync(out.fileno())
    else:
        exported, refused = _export(args, env, env.stdout)
        env.stdout.flush()
    env.err(f"exported {exported} core receipt(s), refused {refused}")
    return EXIT_FAILED if refused else EXIT_OK


def is_core_export(path: str) -> bool:
    """Whether the first non-empty line of ``path`` is a core receipt (an export file)."""
    try:
        for line in read_log_lines(path):
            if not line.raw.strip():
                continue
            try:
                obj = parse_json(line.raw)
            except JsonParseError:
                return False
            return isinstance(obj, dict) and is_core_receipt(obj)
    except OSError:
        return False
    return False


def verify_core_export(
    paths: Sequence[str], *, kernel_keys: Collection[PublicKey] | None = None
) -> VerifyReport:
    """Check every line of core-receipt files: signature, content-addressed id, parameter
    hash and, with ``kernel_keys``, the signer. An export has no chain."""
    report = VerifyReport(files=list(paths))
    keys = frozenset(kernel_keys or ())
    for path in paths:
        for line in read_log_lines(path):
            report.lines += 1
            found: list[tuple[str, str]] = []
            _check_core_line(line.raw, keys, kernel_keys is not None, report, found)
            report.problems.extend(Problem(path, line.number, k, m) for k, m in found)
    return report


def _check_core_line(
    raw: bytes,
    keys: frozenset[PublicKey],
    keys_given: bool,
    report: VerifyReport,
    found: list[tuple[str, str]],
) -> None:
    def flag(kind: str, message: str) -> None:
        found.append((kind, message))

    if not raw.strip():
        flag("malformed", "empty line: not a receipt")
        return
    try:
        result = verify_core_receipt(raw, trusted_keys=keys)
    except CoreReceiptInvalid as exc:
        flag("malformed", str(exc))
        return
    report.receipts += 1
    report.verdicts[result.decision] += 1
    report.kernel_keys[result.signer_key_hex] += 1
    if result.semantic_error is not None:
        flag("semantics", f"not signable: {result.semantic_error}")
    elif not result.receipt_id_valid:
        flag("receipt_id", "id is not the content address of the body: modified")
    elif not result.signature_valid:
        flag("signature", "signature does not verify: the line was modified")
    if not result.parameter_hash_valid:
        flag("parameter_hash", "action.parameter_hash does not match its parameters")
    if keys_given and not result.signer_trusted:
        flag("untrusted_key", f"signed by {result.signer_key_hex}, not an expected key")
