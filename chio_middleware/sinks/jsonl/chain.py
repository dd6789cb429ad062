"""Verifying the chained receipt log (PROTOCOL.md 7; format: :mod:`chio_middleware.sinks.jsonl`).

:class:`ChainVerifier` checks lines one at a time (``tail --verify`` feeds it as lines
arrive); :func:`verify_log` runs it over a log's files (``verify``). A line is fit to
extend the chain when it parses as a receipt, its signature verifies, its kernel key is
expected, it is the canonical JSON of the receipt, and it ends with a newline; it links when
its seq is one more than the last fit line's and its ``chio_log_prev`` is that line's hash.
Anything else is a :class:`Problem` with its ``file:line`` and a diagnosis: deleted lines
(a seq gap), a duplicated or replayed line, a reordered line (a "missing" seq found later),
an inserted line (two lines claim one place), or an edited one (a signature, a canonical
form or the next line's ``chio_log_prev`` no longer matches).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

from ...core.canonical import JsonParseError, parse_json
from ...core.crypto import KeyFormatError, PublicKey, sha256_hex
from ...core.models import HttpReceipt
from ...core.receipts import ReceiptInvalid, parse_receipt, receipt_json, verify_receipt
from .files import LogLine, read_log_lines, rotation_index
from .findings import SCOPE_KEY, DecisionTracker, Finding, ReplayedSlot, ReplayTally

__all__ = [
    "PREV_KEY",
    "SEQ_KEY",
    "ChainVerifier",
    "CheckedLine",
    "Problem",
    "VerifyReport",
    "chain_fields",
    "edge_links",
    "order_by_chain",
    "verify_log",
]

#: The metadata members a chained log adds to every receipt it records.
SEQ_KEY = "chio_log_seq"
PREV_KEY = "chio_log_prev"

#: Problems that make a line's receipt no evidence at all (others are about the chain).
_UNVERIFIED = frozenset({"truncated", "malformed", "signature", "untrusted_key", "not_canonical"})

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")  # as the sink writes it (verification accepts more)


def chain_fields(receipt: HttpReceipt) -> tuple[int, str] | None:
    """``(chio_log_seq, chio_log_prev)`` of a receipt, or ``None`` when absent or malformed."""
    metadata = receipt.metadata or {}
    seq, prev = metadata.get(SEQ_KEY), metadata.get(PREV_KEY)
    if type(seq) is not int or seq < 1 or not isinstance(prev, str):
        return None
    if prev and not _HEX64.fullmatch(prev):
        return None
    return seq, prev


@dataclass(slots=True)
class Problem:
    """Something wrong at a line of a log: ``kind`` is a stable snake_case name."""

    path: str
    line: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass(slots=True)
class CheckedLine:
    """A line after checking: the receipt when it parsed, and the problems found at it."""

    line: LogLine
    receipt: HttpReceipt | None
    problems: list[Problem]


@dataclass(slots=True)
class _Link:
    """A verified chained line (or, with ``path`` ``None``, the virtual start of the log)."""

    seq: int
    hash: str
    prev: str
    path: str | None
    line: int
    problem: Problem | None = None  # for a rival: its "claimed twice" problem

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.path is not None else "the start of the log"

    def describe(self) -> str:
        return f"{self.where} (seq {self.seq})" if self.path is not None else self.where


@dataclass(slots=True)
class _Gap:
    """Seqs ``low..high`` missing before ``problem``'s line, unless found further down."""

    low: int
    high: int
    before: _Link
    problem: Problem
    found: set[int]

    def complete(self) -> bool:
        return len(self.found) == self.high - self.low + 1

    def describe(self) -> str:
        missing = self.high - self.low + 1 - len(self.found)
        before = self.before
        place = f"after {before.where}" if before.path is not None else f"at {before.where}"
        if missing == 1:
            seq = next(s for s in range(self.low, self.high + 1) if s not in self.found)
            return f"receipt seq {seq} is missing before this line ({place}): a deleted line"
        return (
            f"{missing} receipts between seq {self.low} and {self.high} are missing before this "
            f"line ({place}): deleted lines"
        )


class ChainVerifier:
    """Checks receipt lines one at a time in log order: parse, signature, key, chain.

    ``from_start``: the first line must be seq 1 (a whole log); otherwise the first
    chained line seen anchors the chain (a log whose older files were rotated away, or
    ``tail`` starting mid-log). :attr:`problems` holds every finding, amended as later lines
    explain earlier ones (a "missing" line found further down becomes "out of order").
    """

    def __init__(
        self, *, kernel_keys: Collection[PublicKey] | None = None, from_start: bool = True
    ) -> None:
        self.kernel_keys = frozenset(kernel_keys) if kernel_keys is not None else None
        self.problems: list[Problem] = []
        self.first_seq: int | None = None
        self._anchor = _Link(0, "", "", None, 0) if from_start else None
        self._rivals: list[_Link] = []  # other lines claiming the anchor's place
        self._damaged: list[int] = []  # seqs of damaged lines since the anchor
        self._gaps: list[_Gap] = []

    @property
    def last_seq(self) -> int | None:
        """The seq of the last line accepted into the chain."""
        anchor = self._anchor
        return anchor.seq if anchor is not None and anchor.path is not None else None

    def check(self, line: LogLine) -> CheckedLine:
        """Check the next line; returns it with the problems found at it."""
        found: list[Problem] = []
        receipt, link = self._inspect(line, found)
        self.problems.extend(found)
        if link is not None:
            self._chain(link, found)
        return CheckedLine(line, receipt, found)

    def _inspect(
        self, line: LogLine, found: list[Problem]
    ) -> tuple[HttpReceipt | None, _Link | None]:
        """Parse and verify one line; a link only for a line fit to extend the chain."""

        def flag(kind: str, message: str) -> None:
            found.append(Problem(line.path, line.number, kind, message))

        if not line.complete:
            flag("truncated", "no newline at the end of the line: an interrupted write")
        if not line.raw.strip():
            flag("malformed", "empty line: not a receipt")
            return None, None
        try:
            receipt = parse_receipt(line.raw)
        except ReceiptInvalid as exc:
            flag("malformed", f"not a receipt: {exc}")
            return None, None
        trusted = line.complete
        try:
            verify_receipt(receipt)
        except ReceiptInvalid as exc:
            flag("signature", f"{exc}: the line was modified after it was signed")
            trusted = False
        else:
            if not self._expected_key(receipt.kernel_key):
                flag("untrusted_key", f"signed by {receipt.kernel_key}, not an expected kernel key")
                trusted = False
            elif receipt_json(receipt) != line.raw or not _HEX128.fullmatch(receipt.signature):
                flag("not_canonical", "not the canonical JSON the sink wrote: the line was edited")
                trusted = False
        fields = chain_fields(receipt)
        if fields is None:
            flag("unchained", "no valid chio_log_seq/chio_log_prev in its metadata")
            return receipt, None
        if not trusted:
            self._damaged.append(fields[0])
            return receipt, None
        return receipt, _Link(fields[0], sha256_hex(line.raw), fields[1], line.path, line.number)

    def _expected_key(self, kernel_key: str) -> bool:
        if self.kernel_keys is None:
            return True
        try:
            return PublicKey.from_hex(kernel_key) in self.kernel_keys
        except KeyFormatError:
            return False

    def _flag(self, link: _Link, found: list[Problem], kind: str, message: str) -> Problem:
        problem = Problem(link.path or "", link.line, kind, message)
        found.append(problem)
        self.problems.append(problem)
        return problem

    def _chain(self, link: _Link, found: list[Problem]) -> None:
        if self.first_seq is None:
            self.first_seq = link.seq
        anchor = self._anchor
        if anchor is None or anchor.path is None:  # the first chained line
            if link.seq == 1 and link.prev:
                self._flag(link, found, "start", "seq 1 must have an empty chio_log_prev")
                anchor = None
            if anchor is None:
                self._accept(link)
                return
        for candidate in (anchor, *self._rivals):
            if link.seq == candidate.seq + 1 and link.prev == candidate.hash:
                self._settle_rivals(candidate, link)
                self._accept(link)
                return
        if link.seq == anchor.seq + 1:
            self._flag(
                link,
                found,
                "modified",
                f"chio_log_prev does not match {anchor.describe()}: that line was changed "
                "after this one was written, or this line is forged",
            )
            self._accept(link)
        elif link.seq > anchor.seq + 1:
            self._gap(anchor, link, found)
            self._accept(link)
        else:
            self._out_of_order(anchor, link, found)

    def _accept(self, link: _Link) -> None:
        self._anchor = link
        self._rivals = []
        self._damaged = []

    def _gap(self, anchor: _Link, link: _Link, found: list[Problem]) -> None:
        low, high = anchor.seq + 1, link.seq - 1
        damaged = {seq for seq in self._damaged if low <= seq <= high}
        if len(damaged) == high - low + 1:
            return  # every seq in between is there, on a line already reported as damaged
        gap = _Gap(low, high, anchor, self._flag(link, found, "missing", ""), damaged)
        gap.problem.message = gap.describe()
        self._gaps.append(gap)

    def _out_of_order(self, anchor: _Link, link: _Link, found: list[Problem]) -> None:
        for gap in self._gaps:
            if gap.low <= link.seq <= gap.high and link.seq not in gap.found:
                gap.found.add(link.seq)
                where = f"{gap.problem.path}:{gap.problem.line}"
                message = f"seq {link.seq} is out of order: it belongs before {where}"
                if link.seq == gap.low and link.prev != gap.before.hash:
                    message += f", yet it does not link to {gap.before.describe()}: forged"
                self._flag(link, found, "reordered", message)
                if gap.complete():
                    self.problems.remove(gap.problem)
                    self._gaps.remove(gap)
                else:
                    gap.problem.message = gap.describe()
                return
        if link.hash == anchor.hash:
            self._flag(link, found, "duplicate", f"duplicate of {anchor.where}")
        elif link.seq == anchor.seq and link.prev == anchor.prev:
            message = (
                f"seq {link.seq} is claimed by this line and by {anchor.where}, both after the "
                "same line: one of them was inserted"
            )
            link.problem = self._flag(link, found, "inserted", message)
            self._rivals.append(link)
        else:
            message = (
                f"seq {link.seq} comes again after {anchor.describe()}: a duplicated or "
                "replayed line"
            )
            self._flag(link, found, "duplicate", message)

    def _settle_rivals(self, winner: _Link, successor: _Link) -> None:
        """``successor`` links to ``winner``: every other claimant of that seq was inserted."""
        anchor = self._anchor
        if anchor is None or not self._rivals:
            return
        for loser in (anchor, *self._rivals):
            problem = loser.problem if loser.problem is not None else winner.problem
            if loser is winner or problem is None:
                continue
            problem.path, problem.line = loser.path or "", loser.line
            problem.message = (
                f"inserted line: seq {loser.seq} belongs to {winner.where}, which "
                f"{successor.where} links to"
            )


@dataclass(slots=True)
class VerifyReport:
    """What :func:`verify_log` found: counts, the chain's extent and every problem."""

    files: list[str]
    lines: int = 0
    receipts: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    kernel_keys: Counter[str] = field(default_factory=Counter)
    first_seq: int | None = None
    last_seq: int | None = None
    from_start: bool = True
    problems: list[Problem] = field(default_factory=list)
    #: Decision receipts (PROTOCOL.md 7.1) that no final receipt of the log names: requests
    #: whose handler crashed the process, hung or was killed (or is still running). Findings
    #: for an auditor, not damage to the log: they do not make :attr:`ok` false.
    open_decisions: list[Finding] = field(default_factory=list)
    #: Receipts by ``metadata.chio_http_status_scope`` (``final``, ``decision``).
    scopes: Counter[str] = field(default_factory=Counter)
    #: Replayed proof and nonce slots, most presented first (``metadata.chio_replay``).
    replayed: list[ReplayedSlot] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def verify_log(
    paths: Sequence[str | os.PathLike[str]],
    *,
    kernel_keys: Iterable[PublicKey] | None = None,
    from_start: bool | None = None,
) -> VerifyReport:
    """Check the files of one log, oldest first, as one chain (see :class:`ChainVerifier`).

    ``kernel_keys``: the keys receipts may be signed by (any valid signature when ``None``).
    ``from_start`` defaults to true unless the oldest file is a rotated one (``<log>.N``),
    whose predecessors may have been rotated away. Raises ``OSError`` for unreadable files.
    """
    names = [os.fspath(p) for p in paths]
    if from_start is None:
        from_start = not names or rotation_index(names[0]) is None
    keys = list(kernel_keys) if kernel_keys is not None else None
    verifier = ChainVerifier(kernel_keys=keys, from_start=from_start)
    decisions = DecisionTracker()
    replays = ReplayTally()
    report = VerifyReport(files=names, from_start=from_start)
    for name in names:
        for line in read_log_lines(name):
            report.lines += 1
            checked = verifier.check(line)
            receipt = checked.receipt
            if receipt is None:
                continue
            report.receipts += 1
            report.verdicts[receipt.verdict.verdict] += 1
            report.statuses[receipt.response_status] += 1
            report.kernel_keys[receipt.kernel_key] += 1
            scope = (receipt.metadata or {}).get(SCOPE_KEY)
            report.scopes[scope if isinstance(scope, str) else "none"] += 1
            if not any(p.kind in _UNVERIFIED for p in checked.problems):
                decisions.add(receipt, line.path, line.number)
                replays.add(receipt)
    report.open_decisions = decisions.open
    report.replayed = replays.most_replayed()
    report.first_seq, report.last_seq = verifier.first_seq, verifier.last_seq
    order = {name: index for index, name in enumerate(names)}
    report.problems = sorted(verifier.problems, key=lambda p: (order.get(p.path, -1), p.line))
    return report


def _link_of(raw: bytes) -> tuple[int, str] | None:
    """``(seq, prev)`` of a line that looks like a chained receipt (not verified here)."""
    try:
        obj = parse_json(raw)
    except JsonParseError:
        return None
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(metadata, dict):
        return None
    seq, prev = metadata.get(SEQ_KEY), metadata.get(PREV_KEY)
    if type(seq) is not int or seq < 1 or not isinstance(prev, str):
        return None
    return seq, prev


def edge_links(
    path: str | os.PathLike[str], *, block: int = 64 * 1024
) -> tuple[tuple[int, str] | None, tuple[int, str] | None]:
    """The first chained line's ``(seq, chio_log_prev)`` and the last one's ``(seq, hash)``.

    Reads the file's head until a chained line and its tail backwards from the end, so
    ordering files costs little more than opening them. Nothing is verified here.
    """
    first = None
    for line in read_log_lines(path):
        first = _link_of(line.raw)
        if first is not None:
            break
    if first is None:
        return None, None
    with open(path, "rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        carry = b""
        last = None
        while end > 0 and last is None:
            start = max(0, end - block)
            handle.seek(start)
            pieces = (handle.read(end - start) + carry).split(b"\n")
            end = start
            carry = pieces[0]
            for raw in reversed(pieces[1:]):
                link = _link_of(raw)
                if link is not None:
                    last = (link[0], sha256_hex(raw))
                    break
        if last is None and (link := _link_of(carry)) is not None:
            last = (link[0], sha256_hex(carry))
    return first, last


def order_by_chain(paths: Sequence[str], *, base_of: Callable[[str], str]) -> list[list[str]]:
    """Group receipt log files into logs and order each log's files by its chain.

    Files belong to one log when their names share a base (``base_of``) or when one file's
    first line links (``chio_log_prev``) to another file's last line, whatever the files are
    called (``receipts.jsonl-20261201``, a manual ``mv``). Within a log, files are ordered by
    the seq of their first chained line; a file without one keeps its place by name.
    """

    def by_name(name: str) -> tuple[str, int, str]:
        index = rotation_index(name)
        base = base_of(name)
        if index is not None:
            return base, -index, ""
        return (base, 1, "") if base == name else (base, 0, name)

    names = sorted(dict.fromkeys(paths), key=by_name)  # oldest first, as the names suggest
    edges = {name: edge_links(name) for name in names}
    parent = {name: name for name in names}

    def find(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    by_base: dict[str, str] = {}
    by_last: dict[str, str] = {}
    for name in names:
        union(name, by_base.setdefault(base_of(name), name))
        last = edges[name][1]
        if last is not None:
            by_last.setdefault(last[1], name)
    for name in names:
        first = edges[name][0]
        if first is not None and first[1] in by_last and by_last[first[1]] != name:
            union(name, by_last[first[1]])
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(find(name), []).append(name)
    ordered = []
    for members in groups.values():
        members.sort(key=by_name)
        keyed = []
        seq = 0
        for name in members:  # a file without a chained line sits with its name neighbours
            first = edges[name][0]
            seq = first[0] if first is not None else seq
            keyed.append((seq, name))
        keyed.sort(key=lambda item: item[0])  # stable: ties keep the name order
        ordered.append([name for _, name in keyed])
    return ordered
