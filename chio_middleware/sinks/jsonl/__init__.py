"""The chained JSON Lines receipt log: the sink that writes it, readers, and its verifier.

Format (PROTOCOL.md 7): one receipt per line, the canonical JSON of the signed receipt and
``\\n``. Inside its signed ``metadata`` each receipt carries ``chio_log_seq`` (its line
number in the log, from 1, continuing across rotation) and ``chio_log_prev`` (``sha256_hex``
of the previous receipt line without its newline; ``""`` for the first line of the log).
Deleting, inserting, editing or reordering a line therefore breaks a signature or the
chain, and :class:`ChainVerifier` names the line and what is wrong with it.

- :mod:`.sink`: :class:`JsonlSink`, the writer (rotation, cross-process lock, fsync policy);
- :mod:`.files`: reading a log's files, and :class:`LogFollower` (``tail -F``);
- :mod:`.chain`: :class:`ChainVerifier` and :func:`verify_log`, used by ``chio-middleware
  verify`` and ``tail --verify``.
"""

from __future__ import annotations

from .chain import (
    PREV_KEY,
    SEQ_KEY,
    ChainVerifier,
    CheckedLine,
    Problem,
    VerifyReport,
    chain_fields,
    edge_links,
    order_by_chain,
    verify_log,
)
from .files import LogFollower, LogLine, log_files, read_log_lines, rotation_index
from .findings import (
    DECISION_KEY,
    REPLAY_KEY,
    SCOPE_KEY,
    DecisionTracker,
    Finding,
    ReplayedSlot,
    ReplayTally,
)
from .sink import FSYNC_POLICIES, JsonlSink

__all__ = [
    "DECISION_KEY",
    "FSYNC_POLICIES",
    "PREV_KEY",
    "REPLAY_KEY",
    "SCOPE_KEY",
    "SEQ_KEY",
    "ChainVerifier",
    "CheckedLine",
    "DecisionTracker",
    "Finding",
    "JsonlSink",
    "LogFollower",
    "LogLine",
    "Problem",
    "ReplayTally",
    "ReplayedSlot",
    "VerifyReport",
    "chain_fields",
    "edge_links",
    "log_files",
    "order_by_chain",
    "read_log_lines",
    "rotation_index",
    "verify_log",
]
