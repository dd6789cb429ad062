"""What the differential suite protects, and how it records both sides of every request.

One table of tools (:data:`TOOLS`) names each handler the applications serve and the tool
it is meant to be bound to; :func:`bindings` turns it into the middleware's RouteBindings.
Every handler of every application records, under the request's correlation id (the test's
own ``x-diff-case`` header), the tool it is, the middleware's request id it was given, and
every value it read; :class:`RecordingGuard`, an application guard, records under the same
id the tool and the arguments the middleware checked. :mod:`.checker` compares the two.

A :class:`Recorder` keeps records in memory, or in a JSONL file that a server process
appends to and the test reads (``DIFF_RECORD`` names it in the server's environment).
"""

from __future__ import annotations

import copy
import json
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chio_middleware import ChioSettings, RouteBinding
from chio_middleware.core.capability import sign_capability
from chio_middleware.core.crypto import SigningKey
from chio_middleware.core.guards import GuardContext
from chio_middleware.core.models import CapabilityToken

NOW = 1_760_000_000
ISSUER = SigningKey.from_seed_hex("0b" * 32)
AGENT = SigningKey.from_seed_hex("21" * 32)
KERNEL = SigningKey.from_seed_hex("22" * 32)

CASE_HEADER = "x-diff-case"
SYNTHETIC_TOOL = ("chio_http_authority", "authorize_http_request")


@dataclass(frozen=True)
class Tool:
    """A handler the applications serve: its binding, and the grant the attacker holds."""

    name: str
    server: str
    method: str
    template: str
    require_nonce: bool = False
    #: The attacker's grant constraints for it; ``None``: no grant at all.
    constraints: tuple[dict[str, Any], ...] | None = ()


PATH_GRANT = (
    {"type": "path_prefix", "value": "/workspace/"},
    {"type": "max_length", "value": 64},
)
SHORT = ({"type": "max_length", "value": 64},)

#: Every bound handler. Framework routes may be written with converters (``{p:path}``,
#: ``<int:id>``) or slash rules; the template here is what the middleware is told.
TOOLS: tuple[Tool, ...] = (
    Tool("file_get", "srv-files", "GET", "/files/get", constraints=PATH_GRANT),
    Tool("file_read", "srv-files", "POST", "/files/read", constraints=PATH_GRANT),
    Tool("file_form", "srv-files", "POST", "/files/form", constraints=PATH_GRANT),
    Tool("file_body", "srv-files", "POST", "/files/body", constraints=PATH_GRANT),
    Tool("file_values", "srv-files", "POST", "/files/values", constraints=PATH_GRANT),
    Tool("blob_get", "srv-files", "GET", "/blobs/{p:path}", constraints=SHORT),
    Tool("item_get", "srv-items", "GET", "/items/{id:int}", constraints=SHORT),
    Tool("report_list", "srv-items", "GET", "/reports/", constraints=SHORT),
    Tool(
        "delete_note", "srv-notes", "DELETE", "/notes/{note_id}", require_nonce=True,
        constraints=SHORT,
    ),
    Tool("purge", "srv-admin", "POST", "/admin/purge", constraints=None),
    # A class-based endpoint (Starlette HTTPEndpoint, Flask MethodView; in FastAPI two
    # routes declared through Depends(tool(...))): HEAD runs get().
    Tool("note_read", "srv-notes", "GET", "/cbv/{note_id}", constraints=SHORT),
    Tool("note_write", "srv-notes", "POST", "/cbv/{note_id}", constraints=SHORT),
    # Behind two mounts (Starlette Mount, FastAPI APIRouter prefix, Flask Blueprint).
    Tool("mounted_get", "srv-files", "GET", "/api/v1/files/{name}", constraints=SHORT),
)
BY_NAME = {tool.name: tool for tool in TOOLS}


def bindings(tools: Sequence[Tool] = TOOLS, **templates: str) -> list[RouteBinding]:
    """The RouteBindings of ``tools``; ``templates`` overrides a tool's template by name."""
    return [
        RouteBinding(
            method=tool.method,
            path=templates.get(tool.name, tool.template),
            tool_server=tool.server,
            tool_name=tool.name,
            require_nonce=tool.require_nonce,
        )
        for tool in tools
    ]


def settings(routes: Sequence[RouteBinding] | None = None, **overrides: Any) -> ChioSettings:
    values: dict[str, Any] = {
        "signing_key": KERNEL.seed_hex(),
        "trusted_issuers": [ISSUER.public_key.hex],
        "routes": list(bindings() if routes is None else routes),
        "receipt_sink": "memory",
        "max_body_bytes": 64 * 1024,
    }
    values.update(overrides)
    return ChioSettings(**values)


def attacker_grants() -> list[dict[str, Any]]:
    """A legitimate, narrow scope: each tool but ``purge``, with its constraints."""
    grants = []
    for tool in TOOLS:
        if tool.constraints is None:
            continue
        grant: dict[str, Any] = {
            "server_id": tool.server,
            "tool_name": tool.name,
            "operations": ["invoke"],
        }
        if tool.constraints:
            grant["constraints"] = [dict(c) for c in tool.constraints]
        grants.append(grant)
    return grants


def synthetic_grant() -> dict[str, Any]:
    """A grant for unbound side effects (PROTOCOL.md 5.3), constrained like the path tools."""
    return {
        "server_id": SYNTHETIC_TOOL[0],
        "tool_name": SYNTHETIC_TOOL[1],
        "operations": ["invoke"],
        "constraints": [dict(c) for c in PATH_GRANT],
    }


def capability(
    now: int = NOW, grants: list[dict[str, Any]] | None = None, cap_id: str = "cap-diff"
) -> CapabilityToken:
    return sign_capability(
        ISSUER,
        {
            "id": cap_id,
            "issuer": ISSUER.public_key.hex,
            "subject": AGENT.public_key.hex,
            "scope": {"grants": attacker_grants() if grants is None else grants},
            "issued_at": now - 60,
            "expires_at": now + 3600,
        },
    )


# -- records -------------------------------------------------------------------------------


@dataclass
class HandlerCall:
    """A handler that ran: which tool it is, the request id it got, what it read."""

    case: str | None
    tool: str | None  # None: a handler meant to be unbound
    request_id: str | None
    reads: list[tuple[str, Any]] = field(default_factory=list)


@dataclass
class Check:
    """What the middleware checked for a request (seen by the recording guard)."""

    case: str | None
    tool_server: str
    tool_name: str
    pattern: str
    arguments: dict[str, Any]


class Recorder:
    """Both sides of every request, by correlation id; in memory or in a JSONL file."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._calls: list[HandlerCall] = []
        self._checks: list[Check] = []

    # writers (handlers and the guard)

    def call(self, case: str | None, tool: str | None, request_id: str | None) -> HandlerCall:
        entry = HandlerCall(case, tool, request_id)
        with self._lock:
            self._calls.append(entry)
        self._write({"kind": "call", "case": case, "tool": tool, "request_id": request_id})
        return entry

    def read(self, entry: HandlerCall, name: str, value: Any) -> Any:
        entry.reads.append((name, value))
        self._write({"kind": "read", "case": entry.case, "name": name, "value": value})
        return value

    def checked(self, context: GuardContext) -> None:
        values = context.request.header_values(CASE_HEADER)
        case = values[0].decode("latin-1") if len(values) == 1 else None
        route = context.route
        entry = Check(
            case,
            route.tool_server if route is not None else "",
            route.tool_name if route is not None else "",
            route.pattern if route is not None else "",
            copy.deepcopy(dict(context.arguments)),
        )
        with self._lock:
            self._checks.append(entry)
        self._write(
            {
                "kind": "check",
                "case": case,
                "tool_server": entry.tool_server,
                "tool_name": entry.tool_name,
                "pattern": entry.pattern,
                "arguments": entry.arguments,
            }
        )

    def _write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps(record, default=repr) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(line)
            out.flush()

    # readers (the test)

    def calls(self, case: str) -> list[HandlerCall]:
        self._load()
        return [c for c in self._calls if c.case == case]

    def checks(self, case: str) -> list[Check]:
        self._load()
        return [c for c in self._checks if c.case == case]

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        calls: dict[str | None, HandlerCall] = {}
        loaded_calls: list[HandlerCall] = []
        loaded_checks: list[Check] = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record["kind"] == "call":
                entry = HandlerCall(record["case"], record["tool"], record["request_id"])
                calls[entry.case] = entry
                loaded_calls.append(entry)
            elif record["kind"] == "read":
                calls[record["case"]].reads.append((record["name"], record["value"]))
            else:
                loaded_checks.append(
                    Check(
                        record["case"],
                        record["tool_server"],
                        record["tool_name"],
                        record["pattern"],
                        record["arguments"],
                    )
                )
        self._calls, self._checks = loaded_calls, loaded_checks


class RecordingGuard:
    """An application guard that records what the middleware checked; it never denies."""

    name = "DifferentialRecorder"

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def check(self, context: GuardContext) -> str | None:
        self.recorder.checked(context)
        return None


def recorder_from_env() -> Recorder:
    """The recorder of a server process: the JSONL file that ``DIFF_RECORD`` names."""
    return Recorder(os.environ["DIFF_RECORD"])


def same_value(read: Any, checked: Any) -> bool:
    """Whether a value a handler read is the value the middleware checked.

    Equal JSON values (numbers by value, never a bool for a number), or a framework
    converter's integer read from the ASCII decimal text the middleware saw.
    """
    if isinstance(read, bool) or isinstance(checked, bool):
        return type(read) is type(checked) and read == checked
    if isinstance(read, int | float) and isinstance(checked, int | float):
        both_nan = isinstance(read, float) and isinstance(checked, float)
        return (both_nan and math.isnan(read) and math.isnan(checked)) or read == checked
    if isinstance(read, int) and isinstance(checked, str):
        return checked.isascii() and checked.isdigit() and int(checked) == read
    if isinstance(read, dict) and isinstance(checked, dict):
        return read.keys() == checked.keys() and all(
            same_value(read[k], checked[k]) for k in read
        )
    if isinstance(read, list) and isinstance(checked, list):
        return len(read) == len(checked) and all(
            same_value(a, b) for a, b in zip(read, checked, strict=True)
        )
    return type(read) is type(checked) and read == checked
