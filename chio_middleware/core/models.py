"""Pydantic models of the Chio wire objects (PROTOCOL.md 2, 3, 4, 7).

All models are frozen and strict (no type coercion: a signature covers the exact values).
:meth:`WireModel.to_wire` gives the dict whose canonical JSON is what the signer signed:
optional members that are unset are absent, never ``null``, and list members the
reference omits when empty are omitted too. Capability tokens keep unknown members
(``extra="allow"``) so that newer issuers' tokens re-serialise to the signed bytes; DPoP
proofs and execution nonces refuse them (PROTOCOL.md 3).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, PrivateAttr, model_serializer
from pydantic_core.core_schema import SerializerFunctionWrapHandler

__all__ = [
    "CAPABILITY_SCHEMA",
    "DPOP_SCHEMA",
    "NONCE_SCHEMA",
    "CapabilityToken",
    "ChioScope",
    "Constraint",
    "DelegationLink",
    "DpopProof",
    "DpopProofBody",
    "ExecutionNonce",
    "GuardEvidence",
    "HttpReceipt",
    "MonetaryAmount",
    "NonceBinding",
    "PromptGrant",
    "ResourceGrant",
    "SignedExecutionNonce",
    "ToolGrant",
    "Verdict",
    "cached_bytes",
    "keep_bytes",
]

CAPABILITY_SCHEMA = "chio.capability.v1"
DPOP_SCHEMA = "chio.dpop_proof.v1"
NONCE_SCHEMA = "chio.execution_nonce.v1"

#: Unix seconds and counters are u64 in the reference.
U64 = Annotated[int, Field(ge=0, le=2**64 - 1)]
U32 = Annotated[int, Field(ge=0, le=2**32 - 1)]


class WireModel(BaseModel):
    """Base of the wire models: frozen, strict, unknown members refused unless overridden."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid", populate_by_name=True)

    #: Declared list or map members that the reference leaves out when empty.
    _omit_when_empty: ClassVar[frozenset[str]] = frozenset()
    #: Wire names of the declared members (filled per class).
    _declared: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._declared = frozenset(f.alias or name for name, f in cls.model_fields.items())

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        declared, empty = self._declared, self._omit_when_empty
        return {
            key: value
            for key, value in data.items()
            if key not in declared or not (value is None or (key in empty and value in ([], {})))
        }

    def to_wire(self) -> dict[str, Any]:
        """The JSON object of this value as the signer serialised it."""
        return self.model_dump(mode="json", by_alias=True)


def cached_bytes(model: BaseModel, name: str, owner: object) -> bytes | None:
    """The bytes kept in ``model``'s private attribute ``name`` for ``owner``, else ``None``.

    The request path keeps encodings (a receipt's canonical JSON, a proof's signed bytes) in
    pydantic's private slot, read and written directly: the attribute protocol costs a few
    microseconds. Each is kept with the object it encodes (``owner``), because
    ``model_copy`` copies private slots to a copy whose members may differ.
    """
    private = model.__pydantic_private__
    cached = private.get(name) if private is not None else None
    if cached is not None and cached[0] is owner:
        data: bytes = cached[1]
        return data
    return None


def keep_bytes(model: BaseModel, name: str, owner: object, data: bytes) -> bytes:
    """Keep ``data`` as the encoding of ``owner`` in ``model``'s private ``name``; return it."""
    private = model.__pydantic_private__
    if private is None:
        setattr(model, name, (owner, data))
    else:
        private[name] = (owner, data)
    return data


class OpenWireModel(WireModel):
    """A wire model that keeps members it does not know (they stay under the signature)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="allow", populate_by_name=True)


# -- Capability token (PROTOCOL.md 2) -------------------------------------------------------


class Constraint(OpenWireModel):
    """A grant constraint, ``{"type": <snake_case>, "value": <payload>}``."""

    type: str
    value: JsonValue = None


class MonetaryAmount(OpenWireModel):
    """A cost cap."""

    units: U64
    currency: str


class ToolGrant(OpenWireModel):
    """Permission to use a tool of a tool server, with optional constraints and caps."""

    _omit_when_empty = frozenset({"constraints"})

    server_id: str
    tool_name: str
    operations: list[str]
    constraints: list[Constraint] | None = None
    max_invocations: U32 | None = None
    max_cost_per_invocation: MonetaryAmount | None = None
    max_total_cost: MonetaryAmount | None = None
    dpop_required: bool | None = None


class ResourceGrant(OpenWireModel):
    """Permission on resources matching a URI pattern."""

    uri_pattern: str
    operations: list[str]


class PromptGrant(OpenWireModel):
    """Permission on prompts matching a name."""

    prompt_name: str
    operations: list[str]


class ChioScope(OpenWireModel):
    """What a capability grants."""

    _omit_when_empty = frozenset({"grants", "resource_grants", "prompt_grants"})

    grants: list[ToolGrant] | None = None
    resource_grants: list[ResourceGrant] | None = None
    prompt_grants: list[PromptGrant] | None = None


class DelegationLink(OpenWireModel):
    """One delegation step, signed by ``delegator`` over the link without ``signature``."""

    _omit_when_empty = frozenset({"attenuations"})

    capability_id: str
    delegator: str
    delegatee: str
    attenuations: list[JsonValue] | None = None
    timestamp: U64
    scope_hash: str | None = None
    signature: str = Field(repr=False)  # a repr (a traceback's locals) never shows it

    def signing_body(self) -> dict[str, Any]:
        """The object the delegator signed."""
        body = self.to_wire()
        del body["signature"]
        return body


class CapabilityToken(OpenWireModel):
    """A Chio capability token minted by a kernel or authority."""

    _omit_when_empty = frozenset({"delegation_chain", "caveats", "scope_attenuations"})

    id: str
    issuer: str
    subject: str
    scope: ChioScope
    issued_at: U64
    expires_at: U64
    delegation_chain: list[DelegationLink] | None = None
    algorithm: str | None = None
    schema_: str | None = Field(default=None, alias="schema")
    # Members of newer issuers that the reference knows (kept under the signature).
    caveats: list[JsonValue] | None = None
    scope_attenuations: list[JsonValue] | None = None
    attenuation_proof: dict[str, JsonValue] | None = None
    budget_share_bps: Annotated[int, Field(ge=0, le=10000)] | None = None
    signature: str = Field(repr=False)  # a repr (a traceback's locals) never shows it

    def signing_body(self) -> dict[str, Any]:
        """The token without ``signature``: what the issuer signed (before schema handling)."""
        body = self.to_wire()
        del body["signature"]
        return body

    @property
    def tool_grants(self) -> list[ToolGrant]:
        """The tool grants of the scope (empty when none)."""
        return list(self.scope.grants or ())


# -- DPoP proof (PROTOCOL.md 3) -------------------------------------------------------------


class DpopProofBody(WireModel):
    """What the agent key signs: the proof bound to one capability, tool and request."""

    schema_: str = Field(alias="schema")
    capability_id: str
    tool_server: str
    tool_name: str
    action_hash: str
    nonce: str
    issued_at: U64
    agent_key: str


class DpopProof(WireModel):
    """``{"body": ..., "signature": ...}`` as the reference kernel defines it."""

    body: DpopProofBody
    signature: str = Field(repr=False)  # a repr (a traceback's locals) never shows it

    #: ``(body, JCS(body))``: the signed bytes of the body model they were computed from.
    _signed: tuple[DpopProofBody, bytes] | None = PrivateAttr(default=None)


# -- Execution nonce (PROTOCOL.md 4) --------------------------------------------------------


class NonceBinding(WireModel):
    """The request an execution nonce is bound to."""

    subject_id: str
    capability_id: str
    tool_server: str
    tool_name: str
    parameter_hash: str


class ExecutionNonce(WireModel):
    """The signed part of an execution nonce."""

    schema_: str = Field(alias="schema")
    nonce_id: str
    issued_at: U64
    expires_at: U64
    bound_to: NonceBinding


class SignedExecutionNonce(WireModel):
    """An execution nonce with the minting kernel's signature."""

    nonce: ExecutionNonce
    signature: str = Field(repr=False)  # a repr (a traceback's locals) never shows it


# -- HttpReceipt (PROTOCOL.md 7) ------------------------------------------------------------


class Verdict(WireModel):
    """``{"verdict": "allow"}`` or a deny with reason, guard and HTTP status."""

    verdict: Literal["allow", "deny"]
    reason: str | None = None
    guard: str | None = None
    http_status: int | None = None

    @classmethod
    def allow(cls) -> Verdict:
        """The allow verdict."""
        return cls(verdict="allow")

    @classmethod
    def deny(cls, reason: str, guard: str, http_status: int) -> Verdict:
        """A deny verdict."""
        return cls(verdict="deny", reason=reason, guard=guard, http_status=http_status)


class GuardEvidence(WireModel):
    """What one guard concluded, in evaluation order."""

    guard_name: str
    verdict: bool
    details: str | None = None


class HttpReceipt(WireModel):
    """A signed record of one HTTP decision (chio-http-core 0.1.0 shape)."""

    _omit_when_empty = frozenset({"evidence", "metadata"})

    id: str
    request_id: str
    route_pattern: str
    method: str
    caller_identity_hash: str
    session_id: str | None = None
    verdict: Verdict
    evidence: list[GuardEvidence] | None = None
    response_status: int
    timestamp: U64
    content_hash: str
    policy_hash: str
    capability_id: str | None = None
    metadata: dict[str, JsonValue] | None = None
    kernel_key: str
    signature: str

    #: ``(member dict, JCS(receipt))``: the canonical JSON of the whole receipt, once
    #: computed, with the members it encodes (a copy has other members: encoded afresh).
    _canonical: tuple[dict[str, Any], bytes] | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        # Two receipts are the same when their wire forms are (the byte cache aside).
        return isinstance(other, HttpReceipt) and self.to_wire() == other.to_wire()

    __hash__ = None  # type: ignore[assignment]

    def signing_body(self) -> dict[str, Any]:
        """The receipt without ``signature``: what the kernel key signed."""
        body = self.to_wire()
        del body["signature"]
        return body
