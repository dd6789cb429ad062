"""``verify``: check receipt logs line by line, signatures and chain (PROTOCOL.md 7)."""

from __future__ import annotations

import argparse
import os
import re
from collections import Counter
from collections.abc import Sequence

from ..core.canonical import canonical_json
from ..core.crypto import PublicKey
from ..sinks.jsonl import (
    ReplayedSlot,
    VerifyReport,
    log_files,
    order_by_chain,
    rotation_index,
    verify_log,
)
from ._common import EXIT_FAILED, EXIT_OK, CliError, Env, Palette, iso_time, parse_public_key
from .export import is_core_export, verify_core_export

__all__ = ["describe_slot", "group_logs", "register"]

#: How many of the most replayed slots the text report lists.
TOP_REPLAYED = 5

DESCRIPTION = """\
Check every line of one or more receipt logs written by the JSONL sink: it parses as a
receipt, its signature verifies, its kernel key is expected (--kernel-key), and the chain
is intact: chio_log_seq counts up by one and chio_log_prev is the hash of the line before,
across rotated files. Each problem is printed as FILE:LINE: what is wrong (a deleted,
duplicated, reordered, inserted or edited line, a truncated or foreign line).

FILE may be the current log (its rotated files FILE.1, FILE.2 ... are checked too) or any
set of its files in any naming (a shell glob such as receipts.jsonl* or the dated files of
logrotate, receipts.jsonl-2026*, works): files are ordered by the chain itself (the seq of
their first line, and which file's last line the next file's first line links to), not by
their names. A log whose oldest remaining file is a rotated one may start at any seq (older
files were rotated away) unless --from-start; a log of one current file must start at seq 1.
Deleting the last lines of a log leaves no trace in the chain: compare the last seq with
what you expect.

A file of core ChioReceipts (written by export) is recognised by its first line and checked
receipt by receipt instead: signature, content-addressed id, parameter hash, the
reference's semantic rules and, with --kernel-key, the signer (an export has no chain).

Without --kernel-key, each receipt is checked against its own kernel_key only: anyone can
sign a receipt with a key of their own, so give the middleware's public key(s).
Exit status: 0 no problem, 1 problems found, 2 a file cannot be read.
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``verify`` command."""
    parser = commands.add_parser(
        "verify",
        help="verify receipt log files (signatures and chain)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", metavar="FILE", nargs="+", help="a receipt log (JSONL)")
    parser.add_argument(
        "--kernel-key",
        metavar="HEX",
        action="append",
        default=[],
        help="an expected kernel (middleware) public key (repeatable)",
    )
    parser.add_argument(
        "--from-start",
        action="store_true",
        help="require every log to start at seq 1, even when its oldest file is a rotated one",
    )
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.set_defaults(handler=run)


#: logrotate's ``dateext`` suffixes: ``-20261201``, ``-2026-12-01``, ``-20261201-1764547200``.
_DATED = re.compile(r"[-_.]\d{4}-?\d{2}-?\d{2}(?:[-_]?\d+)?$")


def _base_of(path: str) -> str:
    """The current log file a given file belongs to, going by its name."""
    if path.endswith(".lock") and os.path.isfile(path[: -len(".lock")]):
        return path[: -len(".lock")]
    index = rotation_index(path)
    if index is not None:
        return path[: -len(f".{index}")]
    dated = _DATED.search(path)
    return path[: dated.start()] if dated else path


def group_logs(paths: Sequence[str]) -> dict[str, list[str]]:
    """Group file arguments by log, rotated siblings added; each log's files in chain order."""
    members: list[str] = []
    for path in paths:
        if not os.path.exists(path):
            raise CliError(f"{path}: no such file")
        if os.path.isdir(path):
            raise CliError(f"{path}: is a directory, not a receipt log")
        base = _base_of(path)
        if path != f"{base}.lock":
            members.append(path)
        members.extend(os.fspath(p) for p in log_files(base))
    try:
        logs = order_by_chain(members, base_of=_base_of)
    except OSError as exc:
        raise CliError(f"{exc.filename}: {exc.strerror}") from None
    return {_base_of(files[-1]): files for files in logs}


def _starts_the_log(files: Sequence[str]) -> bool:
    """True when the oldest file is the log's current file: nothing older can be missing."""
    oldest = files[0]
    return _base_of(oldest) == oldest and rotation_index(oldest) is None


def _counts(counter: Counter[str] | Counter[int]) -> str:
    return ", ".join(f"{key} {count}" for key, count in sorted(counter.items())) or "-"


def describe_slot(slot: ReplayedSlot) -> str:
    """One line for a replayed slot: presentations, first use, routes, capabilities."""
    first = "" if slot.first_used_at is None else f", first used {iso_time(slot.first_used_at)}"
    caps = ", ".join(sorted(slot.capabilities)) or "-"
    return (
        f"{slot.kind} slot {slot.slot}: presented {slot.presentations} time(s){first}; "
        f"{slot.denials} replay denial(s) seen; {', '.join(sorted(slot.routes))}; "
        f"capability {caps}"
    )


def _print_report(base: str, report: VerifyReport, palette: Palette, env: Env) -> None:
    span = (
        f"seq {report.first_seq}-{report.last_seq}" if report.first_seq is not None else "no chain"
    )
    status = palette.paint("OK", "32") if report.ok else palette.paint("FAILED", "1;31")
    env.out(
        f"{base}: {status}: {len(report.files)} file(s), {report.lines} line(s), "
        f"{report.receipts} receipt(s), {span}"
    )
    for problem in report.problems:
        env.out(f"  {palette.paint(str(problem), '31')}")
    if report.first_seq is not None and report.first_seq > 1 and not report.from_start:
        env.out(f"  note: starts at seq {report.first_seq}; older receipts were rotated away")
    env.out(f"  verdicts: {_counts(report.verdicts)}")
    env.out(f"  statuses: {_counts(report.statuses)}")
    env.out(f"  kernel keys: {_counts(report.kernel_keys)}")
    if report.scopes.get("decision"):
        env.out(f"  receipt scopes: {_counts(report.scopes)}")
    if report.open_decisions:
        env.out(
            f"  {palette.paint(f'{len(report.open_decisions)} decision receipt(s)', '1;33')} "
            "without a final receipt (not a chain problem):"
        )
        for finding in report.open_decisions:
            env.out(f"    {palette.paint(str(finding), '33')}")
    if report.replayed:
        shown = report.replayed[:TOP_REPLAYED]
        env.out(
            f"  most replayed slots ({len(shown)} of {len(report.replayed)}, "
            "replays refused, not a chain problem):"
        )
        for slot in shown:
            env.out(f"    {palette.paint(describe_slot(slot), '33')}")
    if report.problems:
        env.out(f"  problems: {_counts(Counter(p.kind for p in report.problems))}")


def _as_json(base: str, report: VerifyReport) -> dict[str, object]:
    return {
        "log": base,
        "ok": report.ok,
        "files": report.files,
        "lines": report.lines,
        "receipts": report.receipts,
        "first_seq": report.first_seq,
        "last_seq": report.last_seq,
        "verdicts": dict(report.verdicts),
        "statuses": {str(k): v for k, v in report.statuses.items()},
        "kernel_keys": dict(report.kernel_keys),
        "scopes": dict(report.scopes),
        "replayed_slots": [
            {
                "kind": s.kind,
                "slot": s.slot,
                "presentations": s.presentations,
                "first_used_at": s.first_used_at,
                "denials": s.denials,
                "routes": sorted(s.routes),
                "capabilities": sorted(s.capabilities),
            }
            for s in report.replayed
        ],
        "decisions_without_final": [
            {"file": f.path, "line": f.line, "message": f.message} for f in report.open_decisions
        ],
        "problems": [
            {"file": p.path, "line": p.line, "kind": p.kind, "message": p.message}
            for p in report.problems
        ],
    }


def run(args: argparse.Namespace, env: Env) -> int:
    """Verify each log and print its report and a summary."""
    keys: list[PublicKey] | None = [parse_public_key(k, "--kernel-key") for k in args.kernel_key]
    keys = keys or None
    palette = Palette.for_env(env)
    failed = 0
    for base, files in group_logs(args.files).items():
        try:
            if is_core_export(files[0]):
                report = verify_core_export(files, kernel_keys=keys)
            else:
                report = verify_log(
                    files, kernel_keys=keys, from_start=args.from_start or _starts_the_log(files)
                )
        except OSError as exc:
            raise CliError(f"{exc.filename}: {exc.strerror}") from None
        failed += not report.ok
        if args.json:
            env.out(canonical_json(_as_json(base, report)).decode("utf-8"))
        else:
            _print_report(base, report, palette, env)
    if keys is None and not args.json:
        env.err(
            "note: no --kernel-key given: signatures were checked against each receipt's own key"
        )
    return EXIT_FAILED if failed else EXIT_OK
