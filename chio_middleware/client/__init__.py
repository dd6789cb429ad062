"""The agent side of Chio over HTTP: sign requests, answer the nonce challenge, check receipts.

With httpx (the same auth object serves ``httpx.Client`` and ``httpx.AsyncClient``)::

    auth = ChioAuth(capability=token_json, agent_key=seed_hex, kernel_key=kernel_hex)
    response = httpx.post("https://tools.example/chio/tools/notes/write", json=..., auth=auth)
    receipt = response.extensions["chio_receipt"]

With requests: ``requests.post(url, json=..., auth=ChioRequestsAuth(...))``; the verified
receipt is then ``response.chio_receipt``. :func:`verified_receipt` reads either, typed.

Every request gets ``X-Chio-Capability`` and a fresh ``X-Chio-DPoP`` proof bound to the
request binding hash of the bytes actually sent (PROTOCOL.md 3, 6). A 428 answer carrying an
``X-Chio-Execution-Nonce`` is repeated once with that nonce and a new proof (PROTOCOL.md 4);
a second 428 goes back to the caller. With ``kernel_key`` set, every response must carry a
receipt signed by one of those keys, named by ``X-Chio-Receipt-Id`` and made for this very
request (its ``content_hash``, PROTOCOL.md 6, 7). Redirects are not re-signed, and the
Chio headers never follow a redirect to another origin (decided as httpx and requests decide
for ``Authorization``); for an httpx client that follows redirects itself, see
:class:`ChioAuth` (``event_hooks``).

The tool a request invokes is ``tool_server``/``tool_name`` when given, else what
``resolver(method, decoded_path)`` returns (``None``: send that request without Chio
headers), else the segments of the reserved path ``/chio/tools/{server}/{tool}``.

Errors::

    ChioClientError
    ├── RequestSigningError        the request cannot be signed (no tool, bad path or query)
    └── ReceiptVerificationError   a response receipt is missing, invalid or for another request

Bad constructor arguments (keys, capability, options) raise ``ValueError``. httpx and
requests are optional extras: this module imports without them, and each auth class needs
its library only when constructed. The agent key is never logged, printed or repr'd.
"""

from __future__ import annotations

from .credentials import (
    CAPABILITY_HEADER,
    DPOP_HEADER,
    NONCE_HEADER,
    RECEIPT_HEADER,
    RECEIPT_ID_HEADER,
    ChioClientError,
    ChioCredentials,
    KernelKeys,
    ReceiptVerificationError,
    RequestSigningError,
    ToolResolver,
    verified_receipt,
    verify_response_receipt,
)
from .httpx_auth import ChioAuth
from .requests_auth import ChioRequestsAuth

__all__ = [
    "CAPABILITY_HEADER",
    "DPOP_HEADER",
    "NONCE_HEADER",
    "RECEIPT_HEADER",
    "RECEIPT_ID_HEADER",
    "ChioAuth",
    "ChioClientError",
    "ChioCredentials",
    "ChioRequestsAuth",
    "KernelKeys",
    "ReceiptVerificationError",
    "RequestSigningError",
    "ToolResolver",
    "verified_receipt",
    "verify_response_receipt",
]
