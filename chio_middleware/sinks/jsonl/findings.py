"""What an auditor asks of a receipt log beyond its integrity (PROTOCOL.md 7.1, 7).

:class:`DecisionTracker` pairs decision receipts with the final receipts that name them: a
decision receipt left unmatched is a request that was allowed and whose handler never
finished. :class:`ReplayTally` gathers the replay observations of deny receipts
(``metadata.chio_replay``) into the most replayed proof and nonce slots. Neither is a
problem of the log: both are findings about the traffic it records.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...core.models import HttpReceipt

__all__ = [
    "DECISION_KEY",
    "REPLAY_KEY",
    "SCOPE_KEY",
    "DecisionTracker",
    "Finding",
    "ReplayTally",
    "ReplayedSlot",
]

#: The metadata members of PROTOCOL.md 7 and 7.1: which receipt of a request this is.
SCOPE_KEY = "chio_http_status_scope"
DECISION_KEY = "chio_decision_receipt_id"
#: A deny receipt's replay observation: kind, slot, prior_presentations, first_used_at.
REPLAY_KEY = "chio_replay"


@dataclass(slots=True)
class Finding:
    """Something an auditor should know about a line of a log (not damage to the log)."""

    path: str
    line: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class DecisionTracker:
    """Pairs decision receipts with the final receipts that name them (PROTOCOL.md 7.1)."""

    def __init__(self) -> None:
        self._open: dict[str, Finding] = {}

    def add(self, receipt: HttpReceipt, path: str, line: int) -> None:
        """Note one receipt of the log, in log order."""
        metadata = receipt.metadata or {}
        scope = metadata.get(SCOPE_KEY)
        if scope == "decision":
            self._open[receipt.id] = Finding(
                path,
                line,
                "decision_without_final",
                f"decision receipt {receipt.id} ({receipt.method} {receipt.route_pattern}, "
                f"request {receipt.request_id}) has no final receipt: the request was allowed, "
                "and its handler did not finish (crashed, hung or killed, or still running)",
            )
        elif scope == "final":
            linked = metadata.get(DECISION_KEY)
            if isinstance(linked, str):
                self._open.pop(linked, None)

    @property
    def open(self) -> list[Finding]:
        """The decision receipts not yet matched, in log order."""
        return list(self._open.values())




@dataclass(slots=True)
class ReplayedSlot:
    """One replayed proof or nonce slot: how often it was presented, and where."""

    kind: str
    slot: str
    presentations: int
    first_used_at: int | None
    denials: int
    routes: set[str]
    capabilities: set[str]


class ReplayTally:
    """Gathers the replay observations of deny receipts by slot (bounded by ``limit``)."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._slots: dict[tuple[str, str], ReplayedSlot] = {}

    def add(self, receipt: HttpReceipt) -> None:
        """Note one receipt; only those with a ``chio_replay`` observation count."""
        observed = (receipt.metadata or {}).get(REPLAY_KEY)
        if not isinstance(observed, dict):
            return
        prior, kind, slot = (observed.get(k) for k in ("prior_presentations", "kind", "slot"))
        if type(prior) is not int or not isinstance(kind, str) or not isinstance(slot, str):
            return
        first = observed.get("first_used_at")
        entry = self._slots.get((kind, slot))
        if entry is None:
            if len(self._slots) >= self.limit:
                return
            entry = self._slots[(kind, slot)] = ReplayedSlot(
                kind, slot, 0, first if type(first) is int else None, 0, set(), set()
            )
        entry.presentations = max(entry.presentations, prior + 1)
        entry.denials += 1
        entry.routes.add(f"{receipt.method} {receipt.route_pattern}")
        if receipt.capability_id:
            entry.capabilities.add(receipt.capability_id)

    def most_replayed(self, count: int | None = None) -> list[ReplayedSlot]:
        """The slots, most presented first (then by kind and slot, for a stable order)."""
        ranked = sorted(self._slots.values(), key=lambda s: (-s.presentations, s.kind, s.slot))
        return ranked if count is None else ranked[:count]
