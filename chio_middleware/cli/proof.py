"""``proof``: the capability and DPoP headers for one request (PROTOCOL.md 3, 6)."""

from __future__ import annotations

import argparse
import re
from urllib.parse import unquote, urlsplit

from ..core.capability import parse_capability
from ..core.dpop import DpopBinding, create_dpop_proof
from ..core.encoding import encode_header_object
from ..core.errors import ChioError
from ..core.hashing import body_hash, request_binding_hash
from ..core.models import CapabilityToken
from ..core.request import split_target
from ._common import (
    EXIT_OK,
    CliError,
    Env,
    parse_public_key,
    read_bytes,
    read_header_object,
    read_signing_key,
)

__all__ = ["register", "resolve_tool"]

DESCRIPTION = """\
Print the X-Chio-Capability and X-Chio-DPoP header lines for one request, the proof bound
to exactly that request (method, path, query and body: PROTOCOL.md 6) and fresh now.
A proof is single use: make a new one for every request.

The tool the proof names is, in order: --tool-server/--tool-name; the SERVER/TOOL of a
/chio/tools/SERVER/TOOL URL; the capability's grant when it has exactly one grant and that
grant names no "*"; otherwise the flags are required.

  chio-middleware proof --agent-key agent.key --capability cap.json \\
      --method POST --url http://127.0.0.1:8000/notes --data '{"title":"hi"}' > headers
  curl -H @headers -H 'Content-Type: application/json' --data '{"title":"hi"}' \\
      http://127.0.0.1:8000/notes
"""

_METHOD = re.compile(r"[A-Za-z]+")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``proof`` command."""
    parser = commands.add_parser(
        "proof",
        help="make the capability and DPoP headers for a request",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--agent-key", metavar="FILE", required=True, help="agent seed file")
    parser.add_argument(
        "--capability", metavar="FILE", required=True, help="capability token file (- for stdin)"
    )
    parser.add_argument("--method", required=True, help="HTTP method, e.g. POST")
    parser.add_argument("--url", required=True, help="the URL or path and query requested")
    parser.add_argument(
        "--data", metavar="TEXT|@FILE", help="the exact request body (@FILE: a file's bytes)"
    )
    parser.add_argument("--tool-server", metavar="S", help="tool server the route is bound to")
    parser.add_argument("--tool-name", metavar="T", help="tool the route is bound to")
    parser.add_argument(
        "--execution-nonce", metavar="VALUE", help="also print X-Chio-Execution-Nonce: VALUE"
    )
    parser.add_argument("--issued-at", type=int, metavar="UNIX", help="default: now")
    parser.set_defaults(handler=run)


def _tool_from_url(raw_path: str) -> tuple[str, str] | None:
    """``(server, tool)`` of a ``.../chio/tools/{server}/{tool}`` path, segments decoded."""
    segments = raw_path.split("/")
    if len(segments) < 5 or segments[-4:-2] != ["chio", "tools"]:
        return None
    server, tool = unquote(segments[-2]), unquote(segments[-1])
    if not server or not tool or "/" in server + tool:
        return None
    return server, tool


def resolve_tool(
    token: CapabilityToken, url: str, server: str | None, tool: str | None
) -> tuple[str, str]:
    """The tool a proof names: the flags, a ``/chio/tools`` URL, or the only concrete grant."""
    if server and tool:
        return server, tool
    if server or tool:
        raise CliError("give both --tool-server and --tool-name, or neither")
    from_url = _tool_from_url(urlsplit(url).path)
    if from_url is not None:
        return from_url
    grants = token.tool_grants
    if len(grants) == 1 and "*" not in (grants[0].server_id, grants[0].tool_name):
        return grants[0].server_id, grants[0].tool_name
    raise CliError(
        "cannot tell which tool this route is bound to (the capability does not have exactly "
        "one concrete grant): give --tool-server and --tool-name"
    )


def _has_grant(token: CapabilityToken, server: str, tool: str) -> bool:
    """Whether some grant names ``server``/``tool`` with ``invoke`` (constraints aside)."""
    return any(
        grant.server_id in ("*", server)
        and grant.tool_name in ("*", tool)
        and "invoke" in grant.operations
        for grant in token.tool_grants
    )


def _body(data: str | None, env: Env) -> bytes:
    if data is None:
        return b""
    if data.startswith("@"):
        return read_bytes(data[1:], "--data", env)
    return data.encode("utf-8")


def run(args: argparse.Namespace, env: Env) -> int:
    """Bind a fresh proof to the request and print the header lines."""
    if not _METHOD.fullmatch(args.method):
        raise CliError(f"--method {args.method!r} is not an HTTP method")
    agent = read_signing_key(args.agent_key, "--agent-key", env)
    text = read_bytes(args.capability, "--capability", env).decode("utf-8", "replace")
    try:
        token = parse_capability(read_header_object(text, f"--capability {args.capability}"))
    except ChioError as exc:
        raise CliError(f"--capability {args.capability}: {exc.message}") from None
    if parse_public_key(token.subject, "capability subject") != agent.public_key:
        raise CliError(
            f"--agent-key {args.agent_key} is not the capability's subject "
            f"({token.subject}): the middleware would refuse the proof"
        )
    try:
        path, query = split_target(args.url)
    except ChioError as exc:
        raise CliError(f"--url: {exc.message}") from None
    body = _body(args.data, env)
    server, tool = resolve_tool(token, args.url, args.tool_server, args.tool_name)
    method = args.method.upper()
    binding = DpopBinding(
        capability_id=token.id,
        tool_server=server,
        tool_name=tool,
        action_hash=request_binding_hash(method, path, query, body_hash(body)),
    )
    issued_at = args.issued_at if args.issued_at is not None else int(env.clock())
    proof = create_dpop_proof(agent, binding=binding, issued_at=issued_at)
    if not _has_grant(token, server, tool):
        env.err(f"warning: the capability has no invoke grant for {server}/{tool}")
    env.out(f"X-Chio-Capability: {encode_header_object(token.to_wire())}")
    env.out(f"X-Chio-DPoP: {encode_header_object(proof.to_wire())}")
    if args.execution_nonce:
        nonce = read_header_object(args.execution_nonce, "--execution-nonce")
        env.out(f"X-Chio-Execution-Nonce: {encode_header_object(nonce)}")
    return EXIT_OK
