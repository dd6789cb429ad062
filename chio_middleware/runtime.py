"""What both adapters share: settings turned into an engine, a store and a sink.

The adapters only translate ASGI/WSGI into :class:`~chio_middleware.core.request.RequestView`
and render what :class:`ChioRuntime` decides. Everything that can be wrong in the settings
fails here, at construction, never at the first request.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import inspect
import json
import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from . import _speedups
from ._logging import log_failure
from .core.clock import Clock, system_clock
from .core.crypto import PublicKey, SigningKey
from .core.engine import ChioEngine, EngineConfig, Evaluation
from .core.errors import ChioError, Unavailable, log_field
from .core.federation import PeerStore, SyncPeerStoreAsAsync
from .core.federation_trust import FederationTrust
from .core.guards import (
    ForbiddenPathGuard,
    Guard,
    InvocationBudgetGuard,
    RateLimitGuard,
    SecretLeakGuard,
    parse_rate,
)
from .core.models import HttpReceipt
from .core.replay import MemoryReplayStore, ReplayStore
from .core.routing import RouteTable
from .federation import federation_config
from .integrations.coverage import (
    CONFLICT,
    CoverageRow,
    mixed_declarations,
    orphan_bindings,
    render_coverage,
    unbound,
)
from .logs import get_logger
from .settings import ChioSettings, PolicyFile, load_policy_file
from .sinks import ReceiptSink, SinkBusy, open_sink
from .telemetry import open_telemetry
from .workers import detected_workers

__all__ = ["DEFAULT_SHARED_STORE", "ChioRuntime", "Denial", "DenialRenderer", "render_with"]

logger = get_logger()
_STD_LOGGER = logging.getLogger(logger.name)
_speedups.install()

#: The body of the 500 answer when the application fails before it responds.
CRASH_BODY = b'{"error":"internal_error","message":"the application failed","status":500}'

#: The store used instead of memory:// when several workers of this host may run.
DEFAULT_SHARED_STORE = "sqlite:///chio-state.db"


class ChioRuntime:
    """The engine, store and sink built from :class:`ChioSettings`, plus decision logging."""

    def __init__(
        self,
        settings: ChioSettings | None = None,
        *,
        clock: Clock | None = None,
        guards: Sequence[Guard] = (),
        store: ReplayStore | None = None,
        sink: ReceiptSink | None = None,
        peers: PeerStore | None = None,
    ) -> None:
        self.settings = settings if settings is not None else ChioSettings()
        s = self.settings
        signing_key = s.load_signing_key()
        if signing_key is None:
            signing_key = SigningKey.generate()
            logger.warning(
                "chio_ephemeral_signing_key",
                # Not "message": stdlib logging refuses that name as an extra field.
                detail=(
                    "no signing_key configured: using a random key for this process only; "
                    "receipts and nonces will not verify after a restart. Set CHIO_SIGNING_KEY "
                    "or CHIO_SIGNING_KEY_FILE in production."
                ),
                kernel_key=signing_key.public_key.hex,
            )
        routes = list(s.routes)
        default_policy: str = s.default_policy
        rate_limit, forbidden, secret_leak, custom = (
            s.rate_limit,
            list(s.forbidden_paths),
            s.secret_leak_guard,
            list(s.guards),
        )
        policy_file: PolicyFile | None = None
        if s.policy_file is not None:
            policy = policy_file = load_policy_file(s.policy_file)
            routes.extend(policy.routes)
            if policy.default_policy == "deny":  # the stricter of file and setting wins
                default_policy = "deny"
            g = policy.guards
            rate_limit = g.rate_limit if g.rate_limit is not None else rate_limit
            forbidden = g.forbidden_paths if g.forbidden_paths is not None else forbidden
            secret_leak = g.secret_leak if g.secret_leak is not None else secret_leak
            custom = custom + (g.custom or [])
        try:
            table = RouteTable(routes, s.public_paths)
        except ValueError as exc:
            raise ValueError(f"routes: {exc}") from None
        pipeline: list[Guard] = []
        if rate_limit is not None:
            pipeline.append(RateLimitGuard(parse_rate(rate_limit)))
        if forbidden:
            pipeline.append(ForbiddenPathGuard(forbidden))
        if secret_leak:
            pipeline.append(SecretLeakGuard())
        pipeline.extend(_import_guard(path) for path in custom)
        pipeline.extend(guards)
        pipeline.append(InvocationBudgetGuard())
        policy_view: dict[str, Any] = {
            "default_policy": default_policy,
            "routes": [binding.policy_view() for binding in table.bindings],
            "public_paths": list(s.public_paths),
            "guards": [g.name for g in pipeline],
            "rate_limit": rate_limit,
            "forbidden_paths": forbidden,
            "max_body_bytes": s.max_body_bytes,
            "proof_ttl": s.proof_ttl,
            "max_clock_skew": s.max_clock_skew,
            "nonce_ttl": s.nonce_ttl,
            "max_delegation_depth": s.max_delegation_depth,
            "revoked_capabilities": sorted(s.revoked_capabilities),
            "trusted_issuers": sorted(PublicKey.from_hex(k).hex for k in s.trusted_issuers),
            "trusted_kernel_keys": sorted(PublicKey.from_hex(k).hex for k in s.trusted_kernel_keys),
            "websocket": s.websocket,
            "capability_query_param": s.capability_query_param,
        }
        federation = federation_config(
            s,
            policy_file,
            static_issuers={
                signing_key.public_key,
                *(PublicKey.from_hex(k) for k in s.trusted_issuers),
            },
            static_nonce_signers={
                signing_key.public_key,
                *(PublicKey.from_hex(k) for k in s.trusted_kernel_keys),
            },
        )
        if federation is not None:
            policy_view["federation"] = federation.policy_view()
        config = EngineConfig(
            signing_key=signing_key,
            trusted_issuers=frozenset(PublicKey.from_hex(k) for k in s.trusted_issuers),
            trusted_kernel_keys=frozenset(PublicKey.from_hex(k) for k in s.trusted_kernel_keys),
            routes=table,
            guards=tuple(pipeline),
            policy=policy_view,
            revoked_capabilities=frozenset(s.revoked_capabilities),
            default_policy=default_policy,
            proof_ttl=s.proof_ttl,
            max_clock_skew=s.max_clock_skew,
            nonce_ttl=s.nonce_ttl,
            max_delegation_depth=s.max_delegation_depth,
            max_header_bytes=s.max_header_bytes,
            capability_query_param=s.capability_query_param,
        )
        workers = detected_workers()
        #: The federation pin store (``None`` when no trust anchor is configured).
        self.peers: PeerStore | None = None
        if federation is not None:
            self.peers = peers if peers is not None else _open_peer_store(s, workers)
        self.engine = ChioEngine(
            config,
            clock=clock or system_clock,
            federation=None if federation is None else FederationTrust(federation, signing_key),
            peers=None if self.peers is None else SyncPeerStoreAsAsync(self.peers),
        )
        self.telemetry = open_telemetry(s.telemetry)  # before anything opens: it may refuse
        if store is not None:
            _check_store(store)
        self.store = store if store is not None else _open_store(s, workers)
        _log_store_ceiling(self.store, s)
        self.sink = sink if sink is not None else _open_sink(s)
        self._closed = False
        self._coverage_reported = False
        _RUNTIMES.add(self)

    @property
    def kernel_key(self) -> PublicKey:
        """The public key receipts and nonces are signed with."""
        return self.engine.signing_key.public_key

    @property
    def decision_mode(self) -> bool:
        """True when an allowed request is receipted before the app runs (PROTOCOL.md 7.1)."""
        return self.settings.receipt_mode == "decision"

    def admit(self, evaluation: Evaluation) -> None:
        """Before the app runs: deny (503) when the sink already knows it cannot record; in
        decision mode, record the decision receipt (its failure denies 503 the same way)."""
        if evaluation.error is not None:
            return
        try:
            self.sink.ready()
        except Exception as exc:
            logger.error("chio_receipt_sink_not_ready", error=type(exc).__name__)
            evaluation.deny(Unavailable("receipts cannot be recorded; refusing (fail closed)"))
            return
        if not self.decision_mode:
            return
        try:
            self.engine.sign(evaluation, 200, self.sink.record, scope="decision")
        except SinkBusy:  # would wait on the event loop: the adapter retries in a thread
            raise
        except Exception as exc:
            logger.error(
                "chio_decision_receipt_failed",
                error=type(exc).__name__,
                request_id=evaluation.request_id,
                route=evaluation.route_pattern,
            )
            evaluation.deny(
                Unavailable("decision receipt could not be recorded; refusing (fail closed)")
            )

    def record(self, evaluation: Evaluation, status: int) -> HttpReceipt:
        """Sign and record the request's receipt; raise ``Unavailable`` if the sink fails.

        ``SinkBusy`` (the sink would wait, and was asked not to: see
        :func:`~chio_middleware.sinks.without_waiting`) propagates, nothing recorded.
        """
        try:
            receipt = self.engine.sign(evaluation, status, self.sink.record)
        except SinkBusy:
            raise
        except Exception as exc:
            logger.error(
                "chio_receipt_sink_failed",
                error=type(exc).__name__,
                request_id=evaluation.request_id,
                route=log_field(evaluation.route_pattern),
            )
            if self.telemetry is not None:
                self.telemetry.sink_failure(evaluation)
            raise Unavailable("receipt could not be recorded; refusing (fail closed)") from None
        self.log_decision(evaluation, receipt)
        return receipt

    def log_decision(self, evaluation: Evaluation, receipt: HttpReceipt) -> None:
        """One DEBUG event per decision (failures at ERROR); never a key, token or signature."""
        error = evaluation.error
        if self.telemetry is not None:
            self.telemetry.decision(evaluation, receipt)
        if evaluation.failure is not None:
            # Never exc_info: a renderer may print frame locals (rich does), i.e. credentials.
            log_failure(
                "chio_evaluation_failed",
                evaluation.failure,
                request_id=evaluation.request_id,
            )
        # DEBUG: the signed receipt is the audit record of every decision; this line is for
        # debugging (a line per request at INFO cost more than the signature, issue 13).
        # Its context is not even built unless something may print it.
        if not structlog.is_configured() and not _STD_LOGGER.isEnabledFor(logging.DEBUG):
            return
        logger.debug(
            "chio_decision",
            verdict="allow" if error is None else "deny",
            status=receipt.response_status,
            code=None if error is None else error.code,
            guard=None if error is None else error.guard,
            # The raw path (unbound routes), method and tool segments are the client's text.
            method=log_field(evaluation.request.method),
            route=log_field(evaluation.route_pattern),
            tool=None
            if evaluation.route is None or evaluation.route.unbound or evaluation.route.public
            else log_field(f"{evaluation.route.tool_server}/{evaluation.route.tool_name}"),
            capability_id=log_field(receipt.capability_id),
            receipt_id=receipt.id,
            request_id=evaluation.request_id,
        )

    def render_error(
        self, evaluation: Evaluation, error: ChioError
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Sign the denial's receipt and return the error response (503 if that fails)."""
        try:
            self.record(evaluation, error.status)
        except Unavailable as unavailable:
            evaluation.receipt = None
            return self.engine.error_response(evaluation, unavailable)
        return self.engine.error_response(evaluation, error)

    def record_crash(self, evaluation: Evaluation) -> None:
        """Record the 500 receipt of an app that failed before responding (best effort)."""
        with contextlib.suppress(Unavailable):  # the sink already logged why
            self.record(evaluation, 500)

    @property
    def coverage_reported(self) -> bool:
        """True once the route coverage was checked (lifespan, ``init_app`` or first request)."""
        return self._coverage_reported

    def report_coverage(self, rows: Sequence[CoverageRow], *, again: bool = False) -> str | None:
        """Log the route coverage table once (``again``: routes were added since); return
        the start-up failure under ``unbound_routes="refuse"``."""
        if self._coverage_reported and not again:
            return None
        self._coverage_reported = True
        missing = unbound(rows)
        logger.info(
            "chio_route_coverage",
            routes=len(rows),
            unbound=len(missing),
            table="\n" + render_coverage(rows),
        )
        conflicts = [f"{r.method} {r.pattern}" for r in rows if r.binding.startswith(CONFLICT)]
        if conflicts:
            named = ", ".join(conflicts)
            logger.error("chio_route_declared_twice", routes=named)
            return (
                f"these routes are declared as more than one tool (an APIRouter's "
                f"Depends(tool(...)) and the route's own?); declare each once: {named}"
            )
        mixed = mixed_declarations(rows)
        if mixed:
            named = ", ".join(mixed)
            logger.error("chio_tool_spans_safe_and_unsafe_methods", routes=named)
            return (
                f"one @tool covers both a read and a side-effect method, so a read grant "
                f"would authorise the side effect; declare one tool per method: {named}"
            )
        orphans = orphan_bindings(rows, self.engine.config.routes)
        if orphans:
            named = ", ".join(f"{b.method} {b.path}" for b in orphans)
            logger.error("chio_bindings_without_route", bindings=named)
            return (
                f"routes: these bindings name no route of the application, so they would "
                f"protect nothing (compare the templates with the app's): {named}"
            )
        if not missing:
            return None
        names = ", ".join(f"{row.method} {row.pattern}" for row in missing)
        if self.settings.unbound_routes == "refuse":
            message = (
                f"unbound_routes=refuse: these routes have no binding, @tool or @public "
                f"declaration: {names}"
            )
            logger.error("chio_unbound_routes", routes=names)
            return message
        policy = self.engine.config.default_policy
        logger.warning("chio_unbound_routes", routes=names, default_policy=policy)
        return None
    def render_answer(self, evaluation: Evaluation) -> tuple[int, list[tuple[str, str]], bytes]:
        """Sign the receipt of a response the middleware gives itself (the handshake's)."""
        assert evaluation.answer is not None
        status, body = evaluation.answer
        try:
            self.record(evaluation, status)
        except Unavailable as unavailable:
            evaluation.receipt = None
            return self.engine.error_response(evaluation, unavailable)
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("cache-control", "no-store"),
            *self.engine.response_headers(evaluation),
        ]
        return status, headers, body

    def render_crash(self, evaluation: Evaluation) -> tuple[int, list[tuple[str, str]], bytes]:
        """The 500 answer for an app that failed before responding, with its receipt if the
        sink can record one."""
        headers = [("content-type", "application/json")]
        try:
            self.record(evaluation, 500)
        except Unavailable:
            pass
        else:
            headers.extend(self.engine.response_headers(evaluation))
        return 500, headers, CRASH_BODY

    def close(self) -> None:
        """Flush the sink and close the store (lifespan shutdown, atexit)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.sink.close()
        finally:
            self.store.close()
            close_peers = getattr(self.peers, "close", None)
            if close_peers is not None:
                close_peers()


def _open_peer_store(settings: ChioSettings, workers: int | None) -> PeerStore:
    """The federation pin store beside the replay store (same URL, same defaulting)."""
    from .stores.peers import open_peer_store

    return open_peer_store(
        _store_url(settings, workers),
        key_prefix=settings.store_key_prefix,
        timeout=settings.store_timeout,
    )


@dataclass(frozen=True, slots=True)
class Denial:
    """A denial as the application's own error renderer sees it (PROTOCOL.md 8 fields)."""

    code: str
    message: str
    status: int
    receipt_id: str | None


#: Renders a denial in the application's body shape: ``(body, content_type)``. The status,
#: the error code and the receipt headers stay the middleware's.
DenialRenderer = Callable[[Denial], tuple[bytes, str]]


def render_with(
    renderer: DenialRenderer,
    evaluation: Evaluation,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
) -> tuple[list[tuple[str, str]], bytes]:
    """Re-render a denial body with the app's renderer; on any failure keep ours."""
    try:
        fields = json.loads(body)
        rendered, content_type = renderer(
            Denial(fields["error"], fields["message"], status, fields.get("receipt_id"))
        )
    except Exception as exc:
        logger.error("chio_denial_renderer_failed", error=type(exc).__name__)
        return headers, body
    kept = [(k, v) for k, v in headers if k not in ("content-type", "content-length")]
    kept[:0] = [("content-type", content_type), ("content-length", str(len(rendered)))]
    return kept, rendered


def _open_store(settings: ChioSettings, workers: int | None) -> ReplayStore:
    """Open the configured store; never a per-process one when several workers may run
    (``workers`` ``None``: a server whose worker count cannot be known, so maybe several).
    Every failure names ``replay_store``."""
    from .stores import open_store

    url = _store_url(settings, workers)
    try:
        return open_store(
            url,
            key_prefix=settings.store_key_prefix,
            timeout=settings.store_timeout,
            capacity=settings.store_capacity,
            subject_quota=settings.store_subject_quota,
        )
    except ValueError as exc:
        raise ValueError(f"replay_store: {exc}") from None


def _store_url(settings: ChioSettings, workers: int | None) -> str:
    """The store URL: ``replay_store``, or the shared default when workers would split it."""
    url = settings.replay_store
    if (workers is None or workers > 1) and url == "memory://":
        many = f"{workers} workers may run" if workers else "the worker count cannot be known"
        if "replay_store" in settings.model_fields_set:
            raise ValueError(
                f"replay_store: memory:// keeps replay and budget state per process, but "
                f"{many}, so a proof or nonce could be used once per worker; "
                f"use sqlite:///chio-state.db (one host) or redis://... (several hosts)"
            )
        url = DEFAULT_SHARED_STORE
        logger.info("chio_store_shared_by_default", replay_store=url, workers=workers)
    return url


def _check_store(store: ReplayStore) -> None:
    """Refuse at start-up a store whose ``reserve`` predates the per-subject quota."""
    try:
        parameters = inspect.signature(store.reserve).parameters.values()
    except (TypeError, ValueError):  # not introspectable: let the protocol speak
        return
    if not any(p.name == "owner" or p.kind is p.VAR_KEYWORD for p in parameters):
        raise ValueError(
            f"store: {type(store).__name__}.reserve() must accept owner= (the capability "
            "subject whose quota of live slots the reservation counts against; see "
            "ReplayStore.reserve)"
        )


def _log_store_ceiling(store: ReplayStore, settings: ChioSettings) -> None:
    """Say once, at start-up, how much DPoP traffic the store holds before it refuses.

    A proof holds its replay slot for ``proof_ttl + max_clock_skew + 1`` seconds; an
    execution nonce holds one more for its own lifetime.
    """
    lifetime = settings.proof_ttl + settings.max_clock_skew + 1
    quota = getattr(store, "subject_quota", None)
    fields: dict[str, Any] = {
        "store": type(store).__name__,
        "slot_lifetime_s": lifetime,
        "subject_quota": quota,
        "subject_dpop_requests_per_s": None if quota is None else round(quota / lifetime, 1),
    }
    if isinstance(store, MemoryReplayStore):
        fields["entries"] = store.capacity
        fields["dpop_requests_per_s"] = round(store.capacity / lifetime, 1)
        if quota is not None and quota * 2 > store.capacity:
            logger.warning(
                "chio_store_quota_too_large",
                message=(
                    "store_subject_quota is more than half of store_capacity: one or two "
                    "subjects can fill the in-memory store and every other subject gets 503"
                ),
                **fields,
            )
            return
    logger.info("chio_store_ceiling", **fields)


def _open_sink(settings: ChioSettings) -> ReceiptSink:
    try:
        return _open_configured_sink(settings)
    except (ValueError, OSError) as exc:
        raise ValueError(f"receipt_sink: {exc}") from None


def _open_configured_sink(settings: ChioSettings) -> ReceiptSink:
    if settings.receipt_sink.startswith("jsonl:"):
        return open_sink(
            settings.receipt_sink,
            max_bytes=settings.receipt_max_bytes,
            backups=settings.receipt_backups,
            fsync=settings.receipt_fsync,
            fsync_interval=settings.receipt_fsync_interval,
            lock_timeout=settings.receipt_lock_timeout,
        )
    return open_sink(settings.receipt_sink)


def _import_guard(path: str) -> Guard:
    module_name, _, attribute = path.partition(":")
    try:
        target: Any = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"guards: cannot import {path!r}: {exc}") from None
    guard = target() if inspect.isclass(target) else target
    if not isinstance(guard, Guard):
        raise ValueError(f"guards: {path!r} is not a Guard (needs .name and .check)")
    return guard


_RUNTIMES: weakref.WeakSet[ChioRuntime] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # receipts are never lost on a clean interpreter exit
    for runtime in list(_RUNTIMES):
        runtime.close()
