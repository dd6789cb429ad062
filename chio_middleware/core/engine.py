"""The decision engine: one framework-free path from a request view to a decision.

Both adapters call :meth:`ChioEngine.evaluate` (a coroutine: the ASGI adapter awaits it,
the WSGI adapter drives it with :func:`run_sync`, so the logic is written once) and then
:meth:`ChioEngine.sign` when the response starts, which signs the one receipt of the
request with the status the client gets and records it in the sink.

Order for a bound route (PROTOCOL.md 2-5): canonical path (before routing), capability
present, capability valid, arguments (PROTOCOL.md 5.2), grant (with its constraints), DPoP
steps 1-5, execution nonce checks, the guards that must pass before any replay slot is
taken (the rate limit), replay reservations (DPoP then nonce), the nonce challenge when one
is required and absent, then the other guards. Unbound routes (PROTOCOL.md 5.3) take the
same path with the reference's synthetic tool. With federation on (PROTOCOL.md 9), a
capability issuer or nonce signer that is a trust anchor must also have a fresh pin, and
``POST /chio/federation/handshake`` is answered by the engine itself
(``Evaluation.answer``) before any route is matched.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .arguments import Arguments, request_arguments
from .canonical import canonical_json
from .capability import CapabilityVerifier
from .clock import Clock, uuid7, uuid7_pair
from .context import ChioContext
from .crypto import PublicKey, SigningKey, sha256_hex
from .dpop import DpopBinding, check_dpop_proof, dpop_replay_slot, parse_dpop_proof
from .encoding import encode_header_object
from .errors import (
    AccessDenied,
    BadRequest,
    CapabilityRequired,
    ChioError,
    DpopInvalid,
    DpopRequired,
    NonceInvalid,
    NonceRequired,
    PayloadTooLarge,
    RateLimited,
    ReplayDetected,
    Unavailable,
    bounded,
)
from .federation import AsyncPeerStore
from .federation_trust import MAX_HANDSHAKE_BODY, FederationTrust
from .grants import GrantMatch, match_grant
from .guards import Guard, GuardContext
from .hashing import (
    anonymous_identity,
    api_key_identity,
    bearer_identity,
    binding_json,
    body_hash,
    caller_identity_hash,
    content_hash_from_binding,
    dpop_identity,
)
from .inputs import ChioHeaders, read_chio_headers
from .models import (
    CapabilityToken,
    DpopProof,
    GuardEvidence,
    HttpReceipt,
    NonceBinding,
    SignedExecutionNonce,
    ToolGrant,
    Verdict,
)
from .nonce import check_execution_nonce, mint_execution_nonce, nonce_replay_key
from .nonce import parse_execution_nonce as parse_nonce
from .receipts import encode_receipt_header, sign_receipt
from .replay import AsyncReplayStore, check_not_forgotten, run_sync
from .request import RequestView
from .restrictions import check_token_restrictions
from .routing import RouteMatch, RouteTable, check_canonical_path

__all__ = [
    "UNBOUND_TOOL_NAME",
    "UNBOUND_TOOL_SERVER",
    "ChioEngine",
    "EngineConfig",
    "Evaluation",
    "run_sync",
]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: The reference's synthetic tool for requests no route binding names (PROTOCOL.md 5.3).
UNBOUND_TOOL_SERVER = "chio_http_authority"
UNBOUND_TOOL_NAME = "authorize_http_request"
#: What a safe unbound request is checked under when its capability has no grant for the
#: synthetic tool: no constraints and no budget, so only the guards apply.
_SAFE_UNBOUND_GRANT = ToolGrant(
    server_id=UNBOUND_TOOL_SERVER, tool_name=UNBOUND_TOOL_NAME, operations=["invoke"]
)


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine needs, already parsed and validated."""

    signing_key: SigningKey
    trusted_issuers: frozenset[PublicKey]
    trusted_kernel_keys: frozenset[PublicKey]
    routes: RouteTable
    guards: Sequence[Guard]
    policy: Mapping[str, Any]
    revoked_capabilities: frozenset[str] = frozenset()
    default_policy: str = "allow_safe"
    proof_ttl: int = 300
    max_clock_skew: int = 30
    nonce_ttl: int = 30
    max_delegation_depth: int = 4
    max_header_bytes: int = 16 * 1024
    #: Accept the capability as the ``chio_capability`` query parameter (off: refused, 400).
    capability_query_param: bool = False


@dataclass
class Evaluation:
    """The state of one request through the pipeline, and then its outcome."""

    request: RequestView
    request_id: str
    #: Allocated up front so the handler can name the receipt its response will carry.
    receipt_id: str
    now: int
    route: RouteMatch | None = None
    error: ChioError | None = None
    evidence: list[GuardEvidence] = field(default_factory=list)
    capability: CapabilityToken | None = None
    agent_key: PublicKey | None = None
    challenge: str | None = None
    grant: ToolGrant | None = None
    arguments: dict[str, Any] | None = None
    receipt: HttpReceipt | None = None
    #: The decision receipt recorded before the app ran (``receipt_mode="decision"``).
    decision_receipt: HttpReceipt | None = None
    #: An unexpected exception met while evaluating (logged by the adapter; denied 503).
    failure: BaseException | None = None
    #: ``perf_counter`` at the start and at the end of the evaluation; wall clock at the
    #: start in ns (telemetry: evaluation time and the request span).
    started: float = field(default_factory=time.perf_counter)
    evaluated: float | None = None
    started_ns: int = field(default_factory=time.time_ns)
    #: The body limit of this request when it is not ``max_body_bytes`` (the handshake).
    body_limit: int | None = None
    #: A response the middleware gives itself (status, JSON body): the handshake's answer.
    answer: tuple[int, bytes] | None = None
    #: The federation pin store's view for this request (set by ``evaluate``).
    peers: AsyncPeerStore | None = field(default=None, repr=False)
    _digest: tuple[bytes, str | None] | None = field(default=None, init=False, repr=False)
    _binding: tuple[RequestView, bytes] | None = field(default=None, init=False, repr=False)

    def body_hash(self) -> str | None:
        """``body_hash`` of the request body, computed once for the binding and the receipt."""
        body = self.request.body
        if self._digest is None or self._digest[0] is not body:
            self._digest = (body, body_hash(body))
        return self._digest[1]

    def binding_json(self) -> bytes:
        """Canonical JSON of the request's binding inputs, encoded once for the DPoP/nonce
        binding hash and the receipt's ``content_hash``."""
        request = self.request
        if self._binding is None or self._binding[0] is not request:
            encoded = binding_json(request.method, request.path, request.query, self.body_hash())
            self._binding = (request, encoded)
        return self._binding[1]

    @property
    def route_pattern(self) -> str:
        """The matched template, or the raw path when no route matched."""
        return self.route.pattern if self.route is not None else self.request.path

    def context(self) -> ChioContext:
        """What the application may know about this (allowed) call."""
        token, route = self.capability, self.route
        subject = self.agent_key.hex if self.agent_key is not None else None
        if subject is None and token is not None:
            subject = _subject_hex(token.subject)
        tool = None
        if route is not None and not route.public and not route.unbound:
            tool = (route.tool_server, route.tool_name)
        return ChioContext(
            request_id=self.request_id,
            receipt_id=self.receipt_id,
            capability_id=token.id if token is not None else None,
            subject=subject,
            grant=self.grant if token is not None else None,
            tool=tool,
            route_pattern=self.route_pattern,
            arguments=self.arguments,
        )

    def deny(self, error: ChioError) -> None:
        """Record the deciding failure and its evidence."""
        self.error = error
        self.evidence.append(
            GuardEvidence(guard_name=error.guard, verdict=False, details=error.evidence_details)
        )


class ChioEngine:
    """Verifies requests and signs their receipts. Thread-safe; one per middleware."""

    def __init__(
        self,
        config: EngineConfig,
        *,
        clock: Clock,
        federation: FederationTrust | None = None,
        peers: AsyncPeerStore | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.signing_key = config.signing_key
        self.policy_hash = sha256_hex(canonical_json(dict(config.policy)))
        # Anchored keys pass the signature checks; their pins are checked on every use.
        self.federation = federation
        self.peers = peers
        anchored = federation.anchor_keys if federation is not None else frozenset()
        self.capabilities = CapabilityVerifier(
            trusted_issuers={*config.trusted_issuers, config.signing_key.public_key, *anchored},
            revoked=config.revoked_capabilities,
            max_delegation_depth=config.max_delegation_depth,
        )
        self.nonce_signers = (config.signing_key.public_key, *config.trusted_kernel_keys)
        #: Tokens that passed ``check_token_restrictions``, by ``id`` (the token is held).
        self._unrestricted: dict[int, CapabilityToken] = {}
        self._early_guards = tuple(
            g for g in config.guards if getattr(g, "before_reservation", False)
        )
        self._late_guards = tuple(
            g for g in config.guards if not getattr(g, "before_reservation", False)
        )
        # Application guards written as coroutines may await real I/O: the WSGI adapter then
        # needs an event loop. Built-in guards await only the store and never suspend there.
        self._async_guards = any(
            inspect.iscoroutinefunction(g.check) and not getattr(g, "store_only", False)
            for g in config.guards
        )

    # -- evaluation ---------------------------------------------------------------------

    def start(
        self, request: RequestView, resolve: Callable[[], RouteMatch | None] | None = None
    ) -> Evaluation:
        """Begin an evaluation (path checked, route matched) before the body is read.

        ``resolve`` is a framework integration's router (PROTOCOL.md 5.1), called only once
        the path is canonical; without one, the route table matches the path.
        """
        now = self.clock()
        request_id, receipt_id = uuid7_pair(int(now * 1000))
        evaluation = Evaluation(
            request=request, request_id=request_id, receipt_id=receipt_id, now=int(now)
        )
        try:
            check_canonical_path(request.path, request.raw_path, request.route_path or request.path)
            if self._is_handshake(request):
                evaluation.body_limit = MAX_HANDSHAKE_BODY
                return evaluation
            if resolve is not None:
                evaluation.route = resolve()
            else:
                evaluation.route = self.config.routes.match(
                    request.method, request.route_path or request.path, request.raw_path or None
                )
        except ChioError as exc:
            evaluation.deny(exc)
        return evaluation

    def _is_handshake(self, request: RequestView) -> bool:
        federation = self.federation
        return federation is not None and federation.is_handshake(
            request.method, request.route_path or request.path
        )

    async def evaluate(
        self,
        evaluation: Evaluation,
        store: AsyncReplayStore,
        peers: AsyncPeerStore | None = None,
    ) -> Evaluation:
        """Run every check; on failure ``evaluation.error`` holds the deciding error.

        ``peers`` is the async view of the federation pin store (default: the engine's).
        """
        if evaluation.error is not None:
            return evaluation
        evaluation.peers = peers or self.peers
        try:
            if self._is_handshake(evaluation.request):
                await self._handshake(evaluation, store)
            else:
                await self._evaluate(evaluation, store)
        except ChioError as exc:
            evaluation.deny(exc)
        except Exception as exc:  # a bug must never turn into an allow
            evaluation.failure = exc
            evaluation.deny(Unavailable("request could not be evaluated; refusing (fail closed)"))
        evaluation.evaluated = time.perf_counter()
        return evaluation

    def reject(self, evaluation: Evaluation, error: ChioError) -> Evaluation:
        """Deny a request the adapter refused itself (body too large, bad framing)."""
        if evaluation.error is None:
            evaluation.deny(error)
        return evaluation

    async def _evaluate(self, ev: Evaluation, store: AsyncReplayStore) -> None:
        request = ev.request
        headers = read_chio_headers(
            request,
            max_bytes=self.config.max_header_bytes,
            query_capability=self.config.capability_query_param,
        )
        route = ev.route
        if route is None or route.public or route.unbound:
            await self._unbound(ev, store, headers, public=route is not None and route.public)
            return
        if headers.raw_capability is None:
            raise CapabilityRequired("side-effect route requires a capability token")
        token = await self._verify_capability(ev, headers)
        arguments = request_arguments(request, route)
        grant = match_grant(
            token, server=route.tool_server, tool=route.tool_name, arguments=arguments.values
        )
        ev.grant, ev.arguments = grant.grant, arguments.values
        self._check_arguments_visible(ev, arguments, grant.grant)
        binding = route.binding
        # A nonce challenge needs a verified proof (PROTOCOL.md 4), so nonce routes need DPoP.
        require_dpop = (
            grant.dpop_required or binding is None or binding.require_dpop or binding.require_nonce
        )
        if headers.dpop is None and require_dpop:
            raise DpopRequired("this route requires a DPoP proof (X-Chio-DPoP)")
        action_hash = _action_hash(ev)
        proof = None
        if headers.dpop is not None:
            proof = self._check_proof(
                ev,
                token,
                parse_dpop_proof(headers.dpop),
                route.tool_server,
                route.tool_name,
                action_hash,
            )
        needs_nonce = headers.nonce is not None or (binding is not None and binding.require_nonce)
        nonce_binding = (
            _nonce_binding(token, route.tool_server, route.tool_name, action_hash)
            if needs_nonce
            else None
        )
        nonce = None
        if headers.nonce is not None and nonce_binding is not None:
            nonce = await self._check_nonce(ev, parse_nonce(headers.nonce), nonce_binding)
        context = _guard_context(ev, route, token, grant, arguments.values, store)
        # The rate limit runs before any replay slot is taken (a limited caller holds none).
        await self._run_guards(ev, context, self._early_guards)
        await self._reserve(ev, store, proof, nonce)
        if nonce is None and nonce_binding is not None:
            minted = mint_execution_nonce(
                self.signing_key, binding=nonce_binding, now=ev.now, ttl=self.config.nonce_ttl
            )
            ev.challenge = encode_header_object(minted.to_wire())
            raise NonceRequired("this route requires an execution nonce; retry with the one issued")
        await self._run_guards(ev, context, self._late_guards)

    async def _run_guards(
        self, ev: Evaluation, context: GuardContext, guards: Sequence[Guard]
    ) -> None:
        for guard in guards:
            try:
                outcome = guard.check(context)
                # A plain guard's pass (None) or detail (str) skips isawaitable's ABC check.
                if outcome is None or type(outcome) is str:
                    detail = outcome
                else:
                    detail = await outcome if inspect.isawaitable(outcome) else outcome
            except (AccessDenied, RateLimited) as exc:
                raise _as_guard_error(exc, guard.name) from None
            except ChioError:
                raise
            except Exception as exc:
                ev.failure = exc
                raise Unavailable(f"guard {guard.name} failed; refusing (fail closed)") from None
            if detail is None:
                ev.evidence.append(_pass_evidence(guard.name))
            else:  # a guard's detail may quote the request: bounded like every message
                ev.evidence.append(
                    GuardEvidence(guard_name=guard.name, verdict=True, details=bounded(str(detail)))
                )

    def _check_arguments_visible(
        self, ev: Evaluation, arguments: Arguments, grant: ToolGrant
    ) -> None:
        """Refuse arguments no constraint or guard could see (PROTOCOL.md 5.2): a body not
        read as arguments, or a parameter value of a type no check reads."""
        if (
            arguments.opaque_body is not None
            or arguments.opaque_value is not None
            or arguments.rewritten
        ):
            readers = [g.name for g in self.config.guards if getattr(g, "reads_arguments", True)]
            if grant.constraints or readers:
                checks = ["the grant's constraints"] if grant.constraints else []
                checks.extend(readers)
                if arguments.rewritten:
                    names = ", ".join(repr(name[:64]) for name in arguments.rewritten[:4])
                    raise BadRequest(
                        f"parameter {names} would reach the handler as another value than "
                        "its text; send the canonical form (e.g. 7, not ' 7'; true, not 'yes')"
                    )
                if arguments.opaque_body is not None:
                    raise AccessDenied(
                        f"a {arguments.opaque_body} carries arguments that cannot be checked "
                        f"({', '.join(checks)}); send a JSON object or a form",
                        guard="ConstraintGuard",
                    )
                raise AccessDenied(
                    f"parameter {arguments.opaque_value} reaches the handler as a value "
                    f"that cannot be checked ({', '.join(checks)})",
                    guard="ConstraintGuard",
                )
        if grant.constraints:
            ev.evidence.append(_CONSTRAINTS_HOLD)

    async def _unbound(
        self,
        ev: Evaluation,
        store: AsyncReplayStore,
        headers: ChioHeaders,
        *,
        public: bool = False,
    ) -> None:
        """The default policy for unbound routes (PROTOCOL.md 5.3), and public routes.

        Safe methods are allowed; any other method needs a grant for the reference's
        synthetic HTTP tool and a DPoP proof. A public route allows every method without a
        capability, whatever the default policy. A presented credential is always verified,
        and the guard pipeline runs whenever a capability is presented. A proof or nonce
        must hold the capability subject's key, name this capability and bind these
        request bytes; its tool fields are its own.
        """
        request = ev.request
        safe = public or request.method in SAFE_METHODS
        if self.config.default_policy == "deny" and not public:
            raise AccessDenied("no route binding matches this request", guard="DefaultPolicyGuard")
        if headers.raw_capability is None:
            if headers.dpop is not None:
                raise DpopInvalid("a DPoP proof needs a capability", step="sender_constraint")
            if headers.nonce is not None:
                raise NonceInvalid("an execution nonce needs a capability", step="binding")
            if safe:
                ev.evidence.append(_PUBLIC_ROUTE if public else _SAFE_METHOD)
                return
            raise CapabilityRequired("side-effect route requires a capability token")
        token = await self._verify_capability(ev, headers)
        native = ev.route if ev.route is not None and ev.route.unbound else None
        arguments = request_arguments(request, native)  # a framework route's path params
        grant = _unbound_grant(token, arguments.values, required=not safe)
        ev.grant = grant.grant if grant.index >= 0 else None
        ev.arguments = arguments.values
        self._check_arguments_visible(ev, arguments, grant.grant)
        if headers.dpop is None and not safe:
            raise DpopRequired("side-effect routes require a DPoP proof (X-Chio-DPoP)")
        action_hash = _action_hash(ev)
        proof = None
        if headers.dpop is not None:
            presented = parse_dpop_proof(headers.dpop)
            proof = self._check_proof(
                ev,
                token,
                presented,
                presented.body.tool_server,
                presented.body.tool_name,
                action_hash,
            )
        nonce = None
        if headers.nonce is not None:
            signed = parse_nonce(headers.nonce)
            bound = signed.nonce.bound_to
            expected = _nonce_binding(token, bound.tool_server, bound.tool_name, action_hash)
            nonce = await self._check_nonce(ev, signed, expected)
        route = native or RouteMatch(
            request.path, UNBOUND_TOOL_SERVER, UNBOUND_TOOL_NAME, {}, None, unbound=True
        )
        context = _guard_context(ev, route, token, grant, arguments.values, store)
        await self._run_guards(ev, context, self._early_guards)
        await self._reserve(ev, store, proof, nonce)
        await self._run_guards(ev, context, self._late_guards)

    def _check_proof(
        self,
        ev: Evaluation,
        token: CapabilityToken,
        proof: DpopProof,
        tool_server: str,
        tool_name: str,
        action_hash: str,
    ) -> DpopProof:
        """DPoP steps 1-5 for a presented proof (the replay slot is taken later)."""
        ev.agent_key = check_dpop_proof(
            proof,
            subject=token.subject,
            expected=DpopBinding(token.id, tool_server, tool_name, action_hash),
            now=ev.now,
            proof_ttl=self.config.proof_ttl,
            max_clock_skew=self.config.max_clock_skew,
        )
        return proof

    async def _check_nonce(
        self, ev: Evaluation, nonce: SignedExecutionNonce, expected: NonceBinding
    ) -> SignedExecutionNonce:
        """Every execution-nonce check but single use, for a presented nonce.

        A nonce signed by a federation anchor's key counts only while its pin is fresh.
        """
        try:
            check_execution_nonce(
                nonce, expected=expected, now=ev.now, trusted_signers=self.nonce_signers
            )
        except NonceInvalid as exc:
            federation = self.federation
            if exc.step != "signature" or federation is None:
                raise
            kernel = federation.nonce_signer(nonce)
            if kernel is None:
                raise
            await federation.check_nonce_signer(kernel, ev.now, _pin_store(ev))
        return nonce

    async def _reserve(
        self,
        ev: Evaluation,
        store: AsyncReplayStore,
        proof: DpopProof | None,
        nonce: SignedExecutionNonce | None,
    ) -> None:
        """Take the replay slots, proof first, once everything else about them verified.

        Each slot counts against the capability subject's quota of live slots, so that one
        subject cannot fill the store and lock the others out (ReservationQuotaExceeded).
        """
        owner = None if ev.capability is None else _subject_hex(ev.capability.subject)
        if proof is not None:
            key, expires_at = dpop_replay_slot(
                proof, proof_ttl=self.config.proof_ttl, max_clock_skew=self.config.max_clock_skew
            )
            await _reserve_slot(store, "dpop_proof", key, expires_at, ev.now, owner)
            check_not_forgotten(store, proof.body.issued_at, what="DPoP proof", guard="DpopGuard")
            ev.evidence.append(_DPOP_HOLDS)
        if nonce is not None:
            key = nonce_replay_key(nonce)
            await _reserve_slot(
                store, "execution_nonce", key, nonce.nonce.expires_at, ev.now, owner
            )
            check_not_forgotten(
                store, nonce.nonce.issued_at, what="execution nonce", guard="ExecutionNonceGuard"
            )
            ev.evidence.append(_NONCE_HOLDS)

    async def _verify_capability(self, ev: Evaluation, headers: ChioHeaders) -> CapabilityToken:
        assert headers.raw_capability is not None
        token = self.capabilities.verify_encoded(
            headers.raw_capability, now=ev.now, decode=headers.decode_capability
        )
        if self.federation is not None:
            await self.federation.check_issuer(token.issuer, ev.now, _pin_store(ev))
        # PROTOCOL.md 2: enforce or refuse, never ignore. The result depends on the token
        # alone, and the verifier hands back one object per token bytes: checked once.
        if self._unrestricted.get(id(token)) is not token:
            check_token_restrictions(token)
            if len(self._unrestricted) >= _UNRESTRICTED_CACHE:
                self._unrestricted.clear()
            self._unrestricted[id(token)] = token  # kept alive: its id cannot be reused
        ev.capability = token
        ev.evidence.append(_CAPABILITY_VALID)
        return token

    async def _handshake(self, ev: Evaluation, store: AsyncReplayStore) -> None:
        """The federation handshake route (PROTOCOL.md 9): pin the sender, answer ours."""
        assert self.federation is not None
        if len(ev.request.body) > MAX_HANDSHAKE_BODY:
            raise PayloadTooLarge(f"handshake body is larger than {MAX_HANDSHAKE_BODY} bytes")
        peer, answer = await self.federation.handshake(
            ev.request.body, ev.now, _pin_store(ev), store
        )
        ev.evidence.append(
            GuardEvidence(
                guard_name="FederationGuard",
                verdict=True,
                details=f"pinned kernel {peer.kernel_id} until {peer.rotation_due}",
            )
        )
        ev.answer = (200, answer)

    # -- receipts -----------------------------------------------------------------------

    def sign(
        self, ev: Evaluation, status: int, sink_record: Any, *, scope: str = "final"
    ) -> HttpReceipt:
        """Sign the request's final receipt with the status the client receives, via the sink.

        ``sink_record`` is the sink's ``record``; it calls back with its own metadata.
        Raises whatever the sink raises (the adapter answers 503). With ``scope="decision"``
        it signs the decision receipt of an allowed request instead (PROTOCOL.md 7.1),
        kept in ``ev.decision_receipt``; the final receipt then names it.
        """
        request = ev.request
        route_pattern = ev.route_pattern
        if ev.error is None:
            verdict = _ALLOW
        else:
            verdict = Verdict.deny(ev.error.message, ev.error.guard, ev.error.status)
        identity_hash = _identity_hash(ev)
        route_metadata: dict[str, Any] = {"chio_http_status_scope": scope}
        if scope == "final" and ev.decision_receipt is not None:
            route_metadata["chio_decision_receipt_id"] = ev.decision_receipt.id
        if ev.error is not None:
            route_metadata["chio_error_code"] = ev.error.code
            if isinstance(ev.error, ReplayDetected):
                observed = ev.error.observation()
                if observed is not None:
                    route_metadata["chio_replay"] = observed
        if ev.route is not None and not ev.route.public and not ev.route.unbound:
            route_metadata["chio_tool_server"] = ev.route.tool_server
            route_metadata["chio_tool_name"] = ev.route.tool_name

        def sign(extra: Mapping[str, Any]) -> HttpReceipt:
            now = self.clock()
            # The final receipt takes the id the handler was told (ChioContext.receipt_id).
            receipt_id = ev.receipt_id if scope == "final" else uuid7(int(now * 1000))
            return sign_receipt(
                self.signing_key,
                receipt_id=receipt_id,
                request_id=ev.request_id,
                route_pattern=route_pattern,
                method=request.method,
                caller_identity_hash=identity_hash,
                verdict=verdict,
                evidence=ev.evidence,
                response_status=status,
                timestamp=int(now),
                content_hash=content_hash_from_binding(ev.binding_json(), route_pattern),
                policy_hash=self.policy_hash,
                capability_id=ev.capability.id if ev.capability is not None else None,
                metadata={**route_metadata, **extra},
            )

        receipt: HttpReceipt = sink_record(sign)
        if scope == "decision":
            ev.decision_receipt = receipt
        else:
            ev.receipt = receipt
        return receipt

    def response_headers(self, ev: Evaluation) -> list[tuple[str, str]]:
        """Receipt headers for the response (and the nonce challenge, when one was issued)."""
        assert ev.receipt is not None
        headers = [
            ("x-chio-receipt-id", ev.receipt.id),
            ("x-chio-receipt", encode_receipt_header(ev.receipt)),
        ]
        if ev.challenge is not None:
            headers.append(("x-chio-execution-nonce", ev.challenge))
        return headers

    def error_response(
        self, ev: Evaluation, error: ChioError
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers and JSON body of a denial (PROTOCOL.md 8)."""
        receipt_id = ev.receipt.id if ev.receipt is not None else None
        body = json.dumps(error.to_body(receipt_id), separators=(",", ":")).encode("utf-8")
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("cache-control", "no-store"),
        ]
        if error.status == 401:
            headers.append(("www-authenticate", f'ChioDPoP error="{error.code}"'))
        if isinstance(error, RateLimited):
            headers.append(("retry-after", str(error.retry_after)))
        if ev.receipt is not None:
            headers.extend(self.response_headers(ev))
        return error.status, headers, body

    @property
    def has_async_guards(self) -> bool:
        """True when an application guard is a coroutine function."""
        return self._async_guards


async def _reserve_slot(
    store: AsyncReplayStore, kind: str, key: str, expires_at: float, now: int, owner: str | None
) -> None:
    """Reserve a replay slot within ``owner``'s quota; a replay names the slot by a hash of
    its key, never the key."""
    try:
        await store.reserve(key, expires_at=expires_at, now=now, owner=owner)
    except ReplayDetected as exc:
        exc.slot_kind = kind
        exc.slot = sha256_hex(key.encode("utf-8"))[:16]
        raise
def _pin_store(ev: Evaluation) -> AsyncPeerStore:
    """The federation pin store of this request; none configured fails closed (503)."""
    if ev.peers is None:
        raise Unavailable("no federation pin store is configured; refusing (fail closed)")
    return ev.peers


def _action_hash(ev: Evaluation) -> str:
    """``request_binding_hash`` of the request (its encoding is kept for the receipt)."""
    return sha256_hex(ev.binding_json())


def _unbound_grant(
    token: CapabilityToken, arguments: dict[str, Any], *, required: bool
) -> GrantMatch:
    """The grant an unbound request is checked under (PROTOCOL.md 5.3).

    A grant for the synthetic tool (a wildcard grant matches it) is matched with its
    constraints. Without one, a side-effect request is denied; a safe one is checked by the
    guards alone.
    """
    has_grant = any(
        g.server_id in ("*", UNBOUND_TOOL_SERVER)
        and g.tool_name in ("*", UNBOUND_TOOL_NAME)
        and "invoke" in g.operations
        for g in token.tool_grants
    )
    if has_grant or required:
        return match_grant(
            token, server=UNBOUND_TOOL_SERVER, tool=UNBOUND_TOOL_NAME, arguments=arguments
        )
    return GrantMatch(grant=_SAFE_UNBOUND_GRANT, index=-1, dpop_required=False)


def _guard_context(
    ev: Evaluation,
    route: RouteMatch,
    token: CapabilityToken,
    grant: GrantMatch,
    arguments: dict[str, Any],
    store: AsyncReplayStore,
) -> GuardContext:
    return GuardContext(
        request=ev.request,
        route=route,
        capability=token,
        grant=grant.grant,
        grant_index=grant.index,
        subject=_subject_hex(token.subject),
        arguments=arguments,
        now=ev.now,
        store=store,
    )


def _nonce_binding(
    token: CapabilityToken, tool_server: str, tool_name: str, action_hash: str
) -> NonceBinding:
    return NonceBinding(
        subject_id=_subject_hex(token.subject),
        capability_id=token.id,
        tool_server=tool_server,
        tool_name=tool_name,
        parameter_hash=action_hash,
    )


def _as_guard_error(error: ChioError, guard_name: str) -> ChioError:
    if "guard" not in vars(error):  # the class default: name the guard that said no
        error.guard = guard_name  # type: ignore[misc]
    return error


_ALLOW = Verdict.allow()
# The evidence that never varies: built once (the models are frozen, so shared safely).
_CAPABILITY_VALID = GuardEvidence(
    guard_name="CapabilityGuard", verdict=True, details="valid capability token presented"
)
_CONSTRAINTS_HOLD = GuardEvidence(
    guard_name="ConstraintGuard", verdict=True, details="grant constraints hold"
)
_PUBLIC_ROUTE = GuardEvidence(guard_name="DefaultPolicyGuard", verdict=True, details="public route")
_SAFE_METHOD = GuardEvidence(
    guard_name="DefaultPolicyGuard", verdict=True, details="safe method, session-scoped allow"
)
_DPOP_HOLDS = GuardEvidence(guard_name="DpopGuard", verdict=True)
_NONCE_HOLDS = GuardEvidence(guard_name="ExecutionNonceGuard", verdict=True)
_ANONYMOUS_HASH = caller_identity_hash(anonymous_identity())
#: How many tokens' restriction checks are remembered (as many as the verifier caches).
_UNRESTRICTED_CACHE = 1024


@lru_cache(maxsize=256)
def _pass_evidence(guard_name: str) -> GuardEvidence:
    """A guard's pass without details (frozen, so one object serves every request)."""
    return GuardEvidence(guard_name=guard_name, verdict=True)


@lru_cache(maxsize=4096)
def _subject_hex(subject: str) -> str:
    """The capability subject's key in its canonical hex form (asked up to four times a
    request: the replay owner, the guard context, the nonce binding, the handler context)."""
    return PublicKey.from_hex(subject).hex


@lru_cache(maxsize=4096)
def _dpop_identity_hash(agent_key_hex: str) -> str:
    return caller_identity_hash(dpop_identity(agent_key_hex))


def _identity_hash(ev: Evaluation) -> str:
    """The caller identity hash (PROTOCOL.md 6); the common forms are computed once."""
    if ev.agent_key is not None:
        return _dpop_identity_hash(ev.agent_key.hex)
    identity = _identity(ev)
    return _ANONYMOUS_HASH if identity is None else caller_identity_hash(identity)


def _identity(ev: Evaluation) -> dict[str, Any] | None:
    """A bearer or API-key caller; ``None`` for an anonymous one."""
    authorization = ev.request.header_values("authorization")
    if len(authorization) == 1 and authorization[0][:7].lower() == b"bearer ":
        token = authorization[0][7:].strip().decode("latin-1")
        if token:
            return bearer_identity(token)
    api_key = ev.request.header_values("x-api-key")
    if len(api_key) == 1 and api_key[0]:
        return api_key_identity("x-api-key", api_key[0].decode("latin-1"))
    return None
