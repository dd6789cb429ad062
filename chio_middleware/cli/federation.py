"""``federation``: kernel handshakes and the pins they make (PROTOCOL.md 9).

Verbs: ``envelope`` (sign one for file-based exchange, as the reference does), ``handshake``
(run it against a running middleware, as the kernel), ``accept`` (pin a sender from an
envelope file into a store), ``peers`` (list the pins of a store) and ``forget``.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from ..core.canonical import JsonParseError, canonical_json, parse_json
from ..core.crypto import PublicKey
from ..core.errors import ChioError
from ..core.federation import (
    DEFAULT_MAX_HANDSHAKE_SKEW,
    DEFAULT_ROTATION_WINDOW,
    FederationPeer,
    PeerStore,
    accept_envelope_sync,
    check_envelope,
    new_nonce,
    parse_envelope,
    parse_peer,
    sign_envelope,
)
from ..core.federation_trust import FEDERATION_PATH
from ..core.replay import ReplayStore
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    Env,
    count_argument,
    format_time,
    parse_public_key,
    read_bytes,
    read_signing_key,
)

__all__ = ["register"]

DESCRIPTION = """\
Federation trust (PROTOCOL.md 9): a kernel proves possession of its key in a signed
handshake, and the middleware pins that key until rotationDue (12 h by default). A pinned
anchor's key is accepted as capability issuer and nonce signer only while its pin is fresh.

  envelope   print a signed envelope (JSON) for file-based exchange
  handshake  run the handshake against a running middleware as the kernel (cron it before
             rotationDue); exit 1 with the reason on any refusal
  accept     pin the sender of an envelope file into a store
  peers      list the pins of a store, with their age and whether they are fresh
  forget     remove a pin from a store (workers notice within federation_pin_cache_ttl)
"""


def register(commands: Any) -> None:
    """Add the ``federation`` command and its verbs."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "federation",
        help="kernel handshakes and federation pins",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    envelope = verbs.add_parser("envelope", help="print a signed handshake envelope")
    _identity_options(envelope)
    envelope.add_argument("--nonce", help="the challenge nonce (default: 128 random bits)")
    envelope.add_argument("--timestamp", type=count_argument, help="Unix seconds (default: now)")
    envelope.set_defaults(handler=run_envelope)

    handshake = verbs.add_parser("handshake", help="handshake with a running middleware")
    handshake.add_argument("url", help="the middleware's base URL or its handshake URL")
    _identity_options(handshake)
    handshake.add_argument(
        "--peer-key", help="the middleware's public key (hex): its envelope must carry it"
    )
    _timing_options(handshake)
    handshake.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    handshake.set_defaults(handler=run_handshake)

    accept = verbs.add_parser("accept", help="pin the sender of an envelope file")
    accept.add_argument("file", help="the envelope (JSON file, - for stdin)")
    _store_options(accept)
    accept.add_argument("--kernel-id", required=True, help="our kernel id (the addressee)")
    accept.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="ID=KEY",
        help="a trust anchor: kernel id and public key hex (repeatable)",
    )
    _timing_options(accept)
    accept.set_defaults(handler=run_accept)

    peers = verbs.add_parser("peers", help="list the pins of a store")
    _store_options(peers)
    peers.add_argument("--json", action="store_true", help="one JSON object per pin")
    peers.set_defaults(handler=run_peers)

    forget = verbs.add_parser("forget", help="remove a pin from a store")
    forget.add_argument("kernel_id", metavar="ID", help="the kernel id to forget")
    _store_options(forget)
    forget.set_defaults(handler=run_forget)


def _identity_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", required=True, metavar="FILE", help="our kernel key file")
    parser.add_argument("--kernel-id", required=True, metavar="ID", help="our kernel id")
    parser.add_argument("--to", required=True, metavar="ID", help="the addressee's kernel id")


def _timing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-skew",
        type=count_argument,
        default=DEFAULT_MAX_HANDSHAKE_SKEW,
        help=f"seconds of clock difference accepted (default {DEFAULT_MAX_HANDSHAKE_SKEW})",
    )
    parser.add_argument(
        "--rotation-window",
        type=count_argument,
        default=DEFAULT_ROTATION_WINDOW,
        help=f"seconds a new pin stays fresh (default {DEFAULT_ROTATION_WINDOW})",
    )


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", required=True, metavar="URL", help="the middleware's store (sqlite:///, redis://)"
    )
    parser.add_argument(
        "--key-prefix", default="chio:", help="the store key prefix (default chio:)"
    )


def _open(args: argparse.Namespace) -> tuple[PeerStore, ReplayStore]:
    from ..stores import open_store
    from ..stores.peers import open_peer_store

    if args.store == "memory://":
        raise CliError("--store memory:// lives in one process; give the middleware's store")
    try:
        return (
            open_peer_store(args.store, key_prefix=args.key_prefix, timeout=5.0),
            open_store(args.store, key_prefix=args.key_prefix, timeout=5.0),
        )
    except ValueError as exc:
        raise CliError(f"--store: {exc}") from None


def _close(*stores: Any) -> None:
    for store in stores:
        close = getattr(store, "close", None)
        if close is not None:
            close()


def _print_json(env: Env, obj: Any) -> None:
    env.out(canonical_json(obj).decode("utf-8"))


def run_envelope(args: argparse.Namespace, env: Env) -> int:
    """Sign and print an envelope from ``--kernel-id`` to ``--to``."""
    key = read_signing_key(args.key, "--key", env)
    try:
        envelope = sign_envelope(
            key,
            local_kernel_id=args.kernel_id,
            remote_kernel_id=args.to,
            nonce=args.nonce if args.nonce is not None else new_nonce(),
            timestamp=args.timestamp if args.timestamp is not None else int(env.clock()),
        )
    except ValueError:
        raise CliError("--nonce must be 1-256 characters") from None
    _print_json(env, envelope.to_wire())
    return EXIT_OK


def _handshake_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"URL {url!r}: give an http:// or https:// URL")
    if parts.path in ("", "/"):
        return url.rstrip("/") + FEDERATION_PATH
    return url


def _post(url: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"cannot reach {url}: {reason}", EXIT_FAILED) from None


def run_handshake(args: argparse.Namespace, env: Env) -> int:
    """POST our envelope, verify the one that comes back, print both pins."""
    key = read_signing_key(args.key, "--key", env)
    expected = parse_public_key(args.peer_key, "--peer-key") if args.peer_key else None
    url = _handshake_url(args.url)
    ours = sign_envelope(
        key,
        local_kernel_id=args.kernel_id,
        remote_kernel_id=args.to,
        nonce=new_nonce(),
        timestamp=int(env.clock()),
    )
    status, body = _post(url, canonical_json(ours.to_wire()), args.timeout)
    if status != 200:
        env.err(f"chio-middleware federation handshake: refused: {_refusal(status, body)}")
        return EXIT_FAILED
    try:
        answer = parse_json(body)
        pinned_us = parse_peer(answer["peer"])
        theirs = parse_envelope(answer["envelope"])
    except (JsonParseError, ValueError, KeyError, TypeError, ChioError):
        env.err("chio-middleware federation handshake: refused: the answer is not a handshake")
        return EXIT_FAILED
    now = int(env.clock())
    problem = _check_answer(args, key.public_key, pinned_us, now)
    if problem is None:
        try:
            declared = check_envelope(
                theirs, kernel_id=args.kernel_id, now=now, max_skew=args.max_skew
            )
        except ChioError as exc:
            problem = f"its envelope: {exc.message}"
        else:
            if theirs.challenge.local_kernel_id != args.to:
                problem = f"its envelope comes from {theirs.challenge.local_kernel_id!r}"
            elif expected is not None and declared != expected:
                problem = "its envelope carries a key other than --peer-key"
    if problem is not None:
        env.err(f"chio-middleware federation handshake: refused: {problem}")
        return EXIT_FAILED
    pinned_them = FederationPeer(
        kernel_id=args.to,
        public_key=declared.hex,
        established_at=now,
        rotation_due=now + args.rotation_window,
    )
    _print_json(
        env,
        {
            "anchored": expected is not None,
            "pinned_by_remote": pinned_us.to_wire(),
            "pinned_remote": pinned_them.to_wire(),
        },
    )
    return EXIT_OK


def _check_answer(
    args: argparse.Namespace, our_key: PublicKey, pinned_us: FederationPeer, now: int
) -> str | None:
    if pinned_us.kernel_id != args.kernel_id:
        return f"it pinned kernel {pinned_us.kernel_id!r}, not us"
    if PublicKey.from_hex(pinned_us.public_key) != our_key:
        return "it pinned a key that is not ours"
    if not pinned_us.is_fresh(now):
        return "the pin it made is already stale"
    return None


def _refusal(status: int, body: bytes) -> str:
    try:
        error = json.loads(body)
        return f"HTTP {status} {error['error']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}"


def _anchors(values: list[str]) -> dict[str, PublicKey]:
    anchors: dict[str, PublicKey] = {}
    for value in values:
        kernel, sep, key = value.rpartition("=")
        if not sep or not kernel:
            raise CliError(f"--peer {value!r}: give ID=KEY")
        anchors[kernel] = parse_public_key(key, f"--peer {kernel}")
    return anchors


def run_accept(args: argparse.Namespace, env: Env) -> int:
    """Accept an envelope file into the store (every check of PROTOCOL.md 9)."""
    anchors = _anchors(args.peer)
    try:
        obj = parse_json(read_bytes(args.file, "envelope", env))
    except JsonParseError as exc:
        raise CliError(f"envelope {args.file}: {exc}") from None
    peers, nonces = _open(args)
    try:
        peer = accept_envelope_sync(
            obj,
            kernel_id=args.kernel_id,
            now=int(env.clock()),
            anchors=anchors,
            peers=peers,
            nonces=nonces,
            rotation_window=args.rotation_window,
            max_skew=args.max_skew,
        )
    except ChioError as exc:
        env.err(f"chio-middleware federation accept: refused ({exc.code}): {exc.message}")
        return EXIT_FAILED
    finally:
        _close(peers, nonces)
    _print_json(env, peer.to_wire())
    return EXIT_OK


def run_peers(args: argparse.Namespace, env: Env) -> int:
    """List every pin with its age and freshness."""
    peers, nonces = _open(args)
    try:
        pins = peers.list_peers()
    except ChioError as exc:
        raise CliError(exc.message, EXIT_FAILED) from None
    finally:
        _close(peers, nonces)
    now = int(env.clock())
    for pin in pins:
        fresh = pin.is_fresh(now)
        if args.json:
            _print_json(env, {**pin.to_wire(), "age": now - pin.established_at, "fresh": fresh})
            continue
        env.out(
            f"{pin.kernel_id}  {'fresh' if fresh else 'STALE'}  key {pin.public_key}  "
            f"pinned {format_time(pin.established_at, now)}  "
            f"rotationDue {format_time(pin.rotation_due, now)}"
        )
    return EXIT_OK


def run_forget(args: argparse.Namespace, env: Env) -> int:
    """Remove a pin (exit 1 when there was none)."""
    peers, nonces = _open(args)
    try:
        removed = peers.forget_peer(args.kernel_id)
    except ChioError as exc:
        raise CliError(exc.message, EXIT_FAILED) from None
    finally:
        _close(peers, nonces)
    if not removed:
        env.err(f"chio-middleware federation forget: {args.kernel_id!r} is not pinned")
        return EXIT_FAILED
    env.out(f"forgot {args.kernel_id}")
    return EXIT_OK
