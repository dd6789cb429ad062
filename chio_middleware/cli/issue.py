"""``issue``: a development capability token signed with a local key (PROTOCOL.md 2)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any

from ..core.canonical import JsonParseError, canonical_json, parse_json
from ..core.capability import sign_capability
from ..core.clock import uuid7
from ..core.errors import CapabilityInvalid
from ..core.grants import SUPPORTED_CONSTRAINTS
from ..core.linear_regex import PatternError, compile_linear
from ._common import EXIT_OK, CliError, Env, count_argument, parse_public_key, read_signing_key

__all__ = ["parse_grants", "register"]

DESCRIPTION = """\
Issue a capability token (JSON, for development and tests) signed by --issuer-key, in the
reference format: the middleware accepts it when that key is among its trusted issuers.

  --grant SERVER:TOOL[:OPS]   a tool grant; OPS comma-separated (default invoke); SERVER or
                              TOOL may be *; repeat for several grants
  --constraint TYPE=VALUE     e.g. path_prefix=/workspace/ or max_length=64; VALUE is JSON
                              when it parses as JSON (64, "64", true), else a string
  --max-invocations N         the grant's invocation cap
  --dpop-required             the grant requires DPoP even where the route does not

--constraint, --max-invocations and --dpop-required apply to the --grant just before them;
given before the first --grant, they apply to every grant.

Example:
  chio-middleware issue --issuer-key kernel.key --subject "$AGENT_PUB" \\
      --grant notes:read --constraint path_prefix=/workspace/ --dpop-required \\
      --grant notes:write:invoke,read_result --max-invocations 10 > cap.json
"""

_NAME = re.compile(r"[a-z][a-z0-9_]*")


class _GrantItem(argparse.Action):
    """Keeps --grant and its modifiers in command-line order (modifiers bind to the last)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        items: list[tuple[str, Any]] = list(getattr(namespace, "grant_items", None) or [])
        items.append((self.dest, True if self.nargs == 0 else values))
        namespace.grant_items = items


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``issue`` command."""
    parser = commands.add_parser(
        "issue",
        help="issue a development capability token",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--issuer-key", metavar="FILE", required=True, help="issuer seed file")
    parser.add_argument("--subject", metavar="HEX", required=True, help="the agent's public key")
    # In command-line order, into grant_items (see _GrantItem), never into their own dest.
    grant = parser.add_argument_group("grants (order matters: see above)")
    grant.add_argument("--grant", action=_GrantItem, metavar="SERVER:TOOL[:OPS]", help="a grant")
    grant.add_argument("--constraint", action=_GrantItem, metavar="TYPE=VALUE", help="constraint")
    grant.add_argument(
        "--max-invocations",
        action=_GrantItem,
        metavar="N",
        type=count_argument,
        help="invocation cap",
    )
    grant.add_argument(
        "--dpop-required", action=_GrantItem, nargs=0, help="DPoP even where the route does not"
    )
    parser.add_argument("--ttl", type=_positive, default=3600, help="lifetime (s, default 3600)")
    parser.add_argument("--id", help="token id (default: a new UUIDv7)")
    parser.add_argument("--issued-at", type=count_argument, metavar="UNIX", help="default: now")
    parser.add_argument("--out", metavar="FILE", help="write the token to FILE, not stdout")
    parser.set_defaults(handler=run, grant_items=[])


def _positive(text: str) -> int:
    value = count_argument(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _grant(spec: str) -> dict[str, Any]:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise CliError(f"--grant {spec!r}: expected SERVER:TOOL or SERVER:TOOL:OPS")
    operations = parts[2].split(",") if len(parts) == 3 else ["invoke"]
    for operation in operations:
        if not _NAME.fullmatch(operation):
            raise CliError(f"--grant {spec!r}: operation {operation!r} is not a snake_case name")
    return {"server_id": parts[0], "tool_name": parts[1], "operations": operations}


def _constraint(spec: str) -> dict[str, Any]:
    kind, sep, text = spec.partition("=")
    if not sep or not _NAME.fullmatch(kind):
        raise CliError(f"--constraint {spec!r}: expected TYPE=VALUE with a snake_case TYPE")
    try:
        value: Any = parse_json(text)
    except JsonParseError:
        value = text
    return {"type": kind, "value": value}


def _apply(grant: dict[str, Any], kind: str, value: Any) -> None:
    if kind == "constraint":
        grant.setdefault("constraints", []).append(_constraint(value))
    else:
        grant[kind] = value


def parse_grants(items: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Grants from the ordered ``(option, value)`` pairs of the command line."""
    grants: list[dict[str, Any]] = []
    common: list[tuple[str, Any]] = []
    for kind, value in items:
        if kind == "grant":
            grants.append(_grant(value))
        elif grants:
            _apply(grants[-1], kind, value)
        else:
            common.append((kind, value))
    if not grants:
        raise CliError("give at least one --grant SERVER:TOOL[:OPS]")
    for grant in grants:
        for kind, value in common:
            _apply(grant, kind, value)
    return grants


def run(args: argparse.Namespace, env: Env) -> int:
    """Build, sign and print (or write) the token."""
    grants = parse_grants(args.grant_items)
    issuer = read_signing_key(args.issuer_key, "--issuer-key", env)
    subject = parse_public_key(args.subject, "--subject")
    for grant in grants:
        for constraint in grant.get("constraints", ()):
            if constraint["type"] not in SUPPORTED_CONSTRAINTS:
                env.err(
                    f"warning: constraint type {constraint['type']!r} is not implemented by "
                    "chio_middleware: it denies every request under that grant"
                )
            elif constraint["type"] == "regex_match" and isinstance(constraint["value"], str):
                compiled = compile_linear(constraint["value"])
                if isinstance(compiled, PatternError):
                    env.err(
                        f"warning: regex_match pattern does not compile under RE2 ({compiled}): "
                        "it denies every request under that grant"
                    )
    issued_at = args.issued_at if args.issued_at is not None else int(env.clock())
    body = {
        "id": args.id or uuid7(),
        "issuer": issuer.public_key.hex,
        "subject": subject.hex,
        "scope": {"grants": grants},
        "issued_at": issued_at,
        "expires_at": issued_at + args.ttl,
    }
    try:
        token = sign_capability(issuer, body)
    except CapabilityInvalid as exc:
        raise CliError(f"cannot build the token: {exc.message}") from None
    text = canonical_json(token.to_wire()).decode("utf-8") + "\n"
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise CliError(f"--out {args.out}: {exc.strerror}") from None
    else:
        env.stdout.write(text)
    return EXIT_OK
