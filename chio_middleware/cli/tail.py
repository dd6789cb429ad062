"""``tail``: show a receipt log as readable lines, following it across rotation."""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..core.canonical import canonical_json
from ..core.crypto import PublicKey
from ..core.models import HttpReceipt
from ..core.receipts import ReceiptInvalid, parse_receipt
from ..sinks.jsonl import (
    REPLAY_KEY,
    SCOPE_KEY,
    ChainVerifier,
    CheckedLine,
    LogFollower,
    LogLine,
    ReplayTally,
    chain_fields,
    read_log_lines,
)
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    Env,
    Palette,
    count_argument,
    iso_time,
    parse_public_key,
)
from .verify import TOP_REPLAYED, describe_slot

__all__ = ["ReceiptFilter", "register", "render_receipt"]

DESCRIPTION = """\
Print the receipts of a log, one readable line each (time, verdict, status, method,
route, tool, capability, guard, reason, chain seq, receipt id; the tool when the receipt's
metadata names it in chio_tool_server/chio_tool_name), or with --json one JSON object each
({"file", "line", "receipt", "verified", "problems"}).
By default the last 10 receipts of FILE; with --follow also every receipt appended later,
across rotation like tail -F, until Ctrl-C (exit status 0) or --max-receipts.

--verify checks each line as it arrives (signature, --kernel-key, the chain; see verify)
and prints every problem after the line, matched by the filters or not; the exit status is
then 1 when a problem was seen. The chain is anchored at the first line of FILE read.

--filter KEY=VALUE[,KEY=VALUE...] (repeatable; every condition must hold; VALUE may list
alternatives with |): verdict=allow|deny, status=403 or status=4xx, method=POST,
route=/notes/* (a glob on the route pattern), capability=ID, guard=NAME, tool=SERVER/TOOL,
code=chio_replay_detected (the error code of a denial), scope=decision|final (decision
receipts, PROTOCOL.md 7.1, are marked DECISION: the app was about to run). A replay denial
shows replay=#N before: how many times its proof or nonce slot had been presented; the
most replayed slots among the receipts shown are summarised at the end.
Colour is used when stdout is a terminal and NO_COLOR is not set.
"""

FILTER_KEYS = (
    "verdict", "status", "method", "route", "capability", "guard", "tool", "code", "scope"
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``tail`` command."""
    parser = commands.add_parser(
        "tail",
        help="show (and follow) a receipt log",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="the receipt log (JSONL)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep reading as it grows")
    parser.add_argument("--verify", action="store_true", help="verify every line")
    parser.add_argument(
        "--kernel-key", metavar="HEX", action="append", default=[], help="expected kernel key"
    )
    parser.add_argument(
        "--filter", metavar="KEY=VALUE,...", action="append", default=[], help="show only these"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per receipt")
    parser.add_argument(
        "-n", "--lines", type=_lines, default=10, metavar="N|all", help="receipts shown at start"
    )
    parser.add_argument(
        "--max-receipts", type=count_argument, metavar="N", help="stop after printing N receipts"
    )
    parser.add_argument(
        "--interval", type=_seconds, default=0.2, metavar="S", help="poll interval (default 0.2)"
    )
    parser.add_argument("--no-color", action="store_true", help="never use colour")
    parser.set_defaults(handler=run)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0 and 3600 seconds: {text}")
    return value


def _lines(text: str) -> int | None:
    return None if text == "all" else count_argument(text)


def _tool(receipt: HttpReceipt) -> str | None:
    metadata = receipt.metadata or {}
    server, tool = metadata.get("chio_tool_server"), metadata.get("chio_tool_name")
    return f"{server}/{tool}" if isinstance(server, str) and isinstance(tool, str) else None


@dataclass(frozen=True, slots=True)
class ReceiptFilter:
    """The ``--filter`` conditions: every key must match one of its alternatives."""

    conditions: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def parse(cls, specs: Sequence[str]) -> ReceiptFilter:
        """Parse ``KEY=VALUE[|VALUE],...`` options; an unknown key is a :class:`CliError`."""
        conditions: list[tuple[str, tuple[str, ...]]] = []
        for spec in specs:
            for item in filter(None, spec.split(",")):
                key, sep, value = item.partition("=")
                if not sep or key not in FILTER_KEYS or not value:
                    raise CliError(
                        f"--filter {item!r}: expected KEY=VALUE with KEY one of "
                        f"{', '.join(FILTER_KEYS)}"
                    )
                conditions.append((key, tuple(value.split("|"))))
        return cls(tuple(conditions))

    def matches(self, receipt: HttpReceipt) -> bool:
        """Whether ``receipt`` satisfies every condition."""
        return all(
            any(_matches(key, value, receipt) for value in values)
            for key, values in self.conditions
        )


def _matches(key: str, value: str, receipt: HttpReceipt) -> bool:
    verdict = receipt.verdict
    if key == "verdict":
        return verdict.verdict == value.lower()
    if key == "status":
        status = str(receipt.response_status)
        return len(value) == 3 and all(
            v in ("x", "X", s) for v, s in zip(value, status, strict=True)
        )
    if key == "method":
        return receipt.method == value.upper()
    if key == "route":
        return fnmatch.fnmatchcase(receipt.route_pattern, value)
    if key == "capability":
        return receipt.capability_id == value
    if key == "guard":
        return verdict.guard == value
    metadata = receipt.metadata or {}
    if key == "code":
        return metadata.get("chio_error_code") == value
    if key == "scope":
        return metadata.get(SCOPE_KEY) == value
    return _tool(receipt) == value


def printable(text: str) -> str:
    """``text`` safe for a terminal: control, format and separator characters (C0, C1
    such as CSI U+009B, bidi overrides, line breaks) become ``\\uXXXX`` escapes, so a
    request path cannot forge a line or drive the terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text)


def render_receipt(receipt: HttpReceipt, palette: Palette) -> str:
    """One readable line for a receipt; every field from the log is made printable."""
    verdict = receipt.verdict
    allowed = verdict.verdict == "allow"
    status = receipt.response_status
    parts = [
        palette.paint(iso_time(receipt.timestamp), "2"),
        palette.paint(f"{verdict.verdict.upper():<5}", "32" if allowed else "1;31"),
        palette.paint(str(status), "32" if status < 400 else "33" if status < 500 else "31"),
        f"{printable(receipt.method):<6} {printable(receipt.route_pattern)}",
    ]
    metadata = receipt.metadata or {}
    if metadata.get(SCOPE_KEY) == "decision":
        parts.insert(1, palette.paint("DECISION", "1;33"))
    tool = _tool(receipt)
    if tool:
        parts.append(f"tool={printable(tool)}")
    if receipt.capability_id:
        parts.append(f"cap={printable(receipt.capability_id)}")
    if not allowed:
        parts.append(f"guard={printable(verdict.guard or '')}")
        parts.append(f"reason={printable(json.dumps(verdict.reason or '', ensure_ascii=False))}")
    replay = metadata.get(REPLAY_KEY)
    if isinstance(replay, dict) and "prior_presentations" in replay:
        first = replay.get("first_used_at")
        first_text = f" first={iso_time(first)}" if type(first) is int else ""
        parts.append(
            f"replay=#{printable(str(replay['prior_presentations']))} before"
            f" slot={printable(str(replay.get('slot', '')))}{first_text}"
        )
    fields = chain_fields(receipt)
    if fields:
        parts.append(palette.paint(f"seq={fields[0]}", "2"))
    parts.append(palette.paint(f"id={printable(receipt.id)}", "2"))
    return "  ".join(parts)


class _View:
    """Checks lines (or just parses them), applies the filters and prints."""

    def __init__(self, args: argparse.Namespace, env: Env, keys: list[PublicKey] | None) -> None:
        self.env = env
        self.json = args.json
        self.filter = ReceiptFilter.parse(args.filter)
        self.remaining: int | None = args.max_receipts
        self.palette = Palette.for_env(env, allowed=not args.no_color)
        self.verifier = ChainVerifier(kernel_keys=keys, from_start=False) if args.verify else None
        self.replays = ReplayTally()

    def check(self, line: LogLine) -> CheckedLine:
        if self.verifier is not None:
            return self.verifier.check(line)
        try:
            return CheckedLine(line, parse_receipt(line.raw), [])
        except ReceiptInvalid as exc:
            self.env.err(f"warning: {line.where}: not a receipt: {exc}")
            return CheckedLine(line, None, [])

    def done(self) -> bool:
        return self.remaining is not None and self.remaining <= 0

    def show(self, lines: Sequence[LogLine], last: int | None = None) -> None:
        """Check every line; print problems, and the matching receipts (the ``last`` N)."""
        checked = [self.check(line) for line in lines]
        shown = [c for c in checked if c.receipt is not None and self.filter.matches(c.receipt)]
        if last is not None:
            shown = shown[max(0, len(shown) - last) :]
        keep = {id(c) for c in shown}
        for item in checked:
            if not self.done() and (id(item) in keep or item.problems):
                self._print(item, id(item) in keep)

    def _print(self, item: CheckedLine, counted: bool) -> None:
        receipt = item.receipt
        if counted and self.remaining is not None:
            self.remaining -= 1
        if counted and receipt is not None:
            self.replays.add(receipt)
        if self.json:
            document = {
                "file": item.line.path,
                "line": item.line.number,
                "receipt": receipt.to_wire() if receipt is not None else None,
                "verified": None if self.verifier is None else not item.problems,
                "problems": [{"kind": p.kind, "message": p.message} for p in item.problems],
            }
            self.env.out(canonical_json(document).decode("utf-8"))
            return
        if receipt is not None:
            self.env.out(render_receipt(receipt, self.palette))
        for problem in item.problems:
            self.env.out(self.palette.paint(f"!! {problem}", "1;31"))

    def summary(self) -> None:
        """After the receipts: the most replayed slots among those shown (text output)."""
        slots = self.replays.most_replayed()
        if self.json or not slots:
            return
        shown = slots[:TOP_REPLAYED]
        header = f"most replayed slots among the receipts shown ({len(shown)} of {len(slots)}):"
        self.env.out(header)
        for slot in shown:
            self.env.out(f"  {printable(describe_slot(slot))}")

    def status(self) -> int:
        return EXIT_FAILED if self.verifier is not None and self.verifier.problems else EXIT_OK


def run(args: argparse.Namespace, env: Env) -> int:
    """Show the last receipts, then follow the log when asked."""
    keys = [parse_public_key(k, "--kernel-key") for k in args.kernel_key] or None
    view = _View(args, env, keys)
    if os.path.isdir(args.file):
        raise CliError(f"{args.file}: is a directory, not a receipt log")
    if not args.follow:
        try:
            lines = list(read_log_lines(args.file))
        except FileNotFoundError:
            raise CliError(f"{args.file}: no such file") from None
        except OSError as exc:
            raise CliError(f"{args.file}: {exc.strerror}") from None
        view.show(lines, args.lines)
        view.summary()
        return view.status()
    wait: Callable[[], None] = env.wait or (lambda: time.sleep(args.interval))
    follower = LogFollower(args.file)
    try:
        if not os.path.exists(args.file):
            env.err(f"{args.file}: no such file yet; waiting for it to appear")
        view.show(follower.poll(), args.lines)
        while not view.done():
            wait()
            view.show(follower.poll())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise CliError(f"{args.file}: {exc.strerror}") from None
    finally:
        follower.close()
    view.summary()
    return view.status()
