"""The property every differential case must have.

Either the middleware refused the request (a PROTOCOL.md 8 JSON error, and no handler
ran), or the handler that ran is the one bound to the tool the middleware checked and
every value that handler read equals the value the middleware checked under that name.
A request the server or the framework itself turned away (no handler ran) has it too.

:func:`violations` returns what is wrong, in words; an empty list means the property holds.
"""

from __future__ import annotations

import json
from typing import Any

from chio_middleware.core.receipts import decode_receipt_header, verify_receipt

from .spec import BY_NAME, KERNEL, SYNTHETIC_TOOL, Recorder, same_value
from .wire import Reply

#: PROTOCOL.md 8: each error code and its status.
ERROR_STATUS = {
    "chio_bad_request": 400,
    "chio_capability_required": 401,
    "chio_capability_invalid": 401,
    "chio_dpop_required": 401,
    "chio_dpop_invalid": 401,
    "chio_replay_detected": 401,
    "chio_nonce_invalid": 401,
    "chio_access_denied": 403,
    "chio_payload_too_large": 413,
    "chio_headers_too_large": 431,
    "chio_nonce_required": 428,
    "chio_rate_limited": 429,
    "chio_federation_invalid": 401,
    "chio_federation_untrusted": 403,
    "chio_unavailable": 503,
}


def chio_error(reply: Reply) -> dict[str, Any] | None:
    """The PROTOCOL.md 8 error body of ``reply``, if it is one."""
    if reply.status < 400:
        return None
    try:
        body = json.loads(reply.body)
    except ValueError:
        return None
    if isinstance(body, dict) and str(body.get("error", "")).startswith("chio_"):
        return body
    return None


def refusal_problems(reply: Reply, body: dict[str, Any]) -> list[str]:
    """What is wrong with the form of a middleware refusal."""
    problems = []
    code = body.get("error")
    if set(body) != {"error", "message", "status", "receipt_id"}:
        problems.append(f"error body members are {sorted(body)}")
    if ERROR_STATUS.get(str(code)) != reply.status or body.get("status") != reply.status:
        problems.append(f"error {code} answered with status {reply.status} ({body.get('status')})")
    content_type = (reply.header("content-type") or "").split(";")[0].strip()
    if content_type != "application/json":
        problems.append(f"error Content-Type is {content_type!r}")
    if code != "chio_unavailable" and reply.header("x-chio-receipt-id") != body.get("receipt_id"):
        problems.append("error receipt_id does not match X-Chio-Receipt-Id")
    return problems


def receipt_request_id(reply: Reply) -> str | None:
    header = reply.header("x-chio-receipt")
    if header is None:
        return None
    receipt = verify_receipt(decode_receipt_header(header), trusted_keys=[KERNEL.public_key])
    return receipt.request_id


def violations(reply: Reply, rec: Recorder, case: str) -> list[str]:
    """Everything by which request ``case`` breaks the property (empty: it holds)."""
    calls = rec.calls(case)
    checks = rec.checks(case)
    refusal = chio_error(reply)
    if refusal is not None:
        problems = refusal_problems(reply, refusal)
        problems.extend(
            f"the middleware refused ({refusal['error']}) but handler {c.tool} ran" for c in calls
        )
        return problems
    if not calls:
        return []  # the server or the framework turned it away; no handler acted on it
    problems: list[str] = []
    if len(calls) > 1 or len(checks) > 1:
        problems.append(f"{len(calls)} handler runs and {len(checks)} checks for one request")
    call, check = calls[0], (checks[0] if checks else None)
    receipt_for = receipt_request_id(reply)
    if call.request_id is None:
        problems.append(f"handler {call.tool} ran without a middleware request id")
    elif receipt_for is not None and receipt_for != call.request_id:
        # (A response without a receipt is not this property's business: inside a
        # Starlette stack an app crash is answered by Starlette, its receipt in the sink.)
        problems.append("the response receipt is not for the request the handler saw")
    if call.tool is not None:
        tool = BY_NAME[call.tool]
        if check is None:
            return [
                *problems,
                f"handler {call.tool} ({tool.server}) ran but the middleware checked no tool "
                f"(it read {_show(call.reads)})",
            ]
        if (check.tool_server, check.tool_name) != (tool.server, tool.name):
            problems.append(
                f"handler {call.tool} ran but the middleware checked "
                f"{check.tool_server}/{check.tool_name} ({check.pattern})"
            )
    elif check is not None and (check.tool_server, check.tool_name) != SYNTHETIC_TOOL:
        problems.append(
            f"an unbound handler ran but the middleware checked "
            f"{check.tool_server}/{check.tool_name} ({check.pattern})"
        )
    if check is not None:
        for name, value in call.reads:
            if name not in check.arguments:
                problems.append(
                    f"handler {call.tool} read {name}={_show(value)} that the middleware never "
                    f"checked (it checked {_show(check.arguments)})"
                )
            elif not same_value(value, check.arguments[name]):
                problems.append(
                    f"handler {call.tool} read {name}={_show(value)} but the middleware checked "
                    f"{name}={_show(check.arguments[name])}"
                )
    return problems


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."
