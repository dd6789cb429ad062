from __future__ import annotations

from chio_middleware.cli.tail import printable, render_receipt
from chio_middleware.core.crypto import SigningKey
from chio_middleware.core.models import Verdict
from chio_middleware.core.receipts import sign_receipt


class Plain:
    def paint(self, text: str, _code: str) -> str:
        return text


def test_attacker_text_cannot_forge_lines_or_drive_the_terminal() -> None:
    receipt = sign_receipt(
        SigningKey.from_seed_hex("22" * 32),
        request_id="r",
        route_pattern="/x\n2026-01-01T00:00:00Z  ALLOW  200  DELETE /notes/1\x1b[8m\x9b\u202e",
        method="GET",
        caller_identity_hash="ab" * 32,
        verdict=Verdict.deny("bad\x9bthing", "G\n", 401),
        response_status=401,
        timestamp=1,
        content_hash="cd" * 32,
        policy_hash="ef" * 32,
        capability_id="cap\x1b]0;owned\x07",
    )
    line = render_receipt(receipt, Plain())  # type: ignore[arg-type]
    assert line.isprintable()
    assert "\\u000a2026" in line and "\\u001b" in line and "\\u009b" in line and "\\u202e" in line
    assert printable("plain /notes/{id}") == "plain /notes/{id}"
