"""Peer comparison: one DPoP proof verification, ours against pydpop and PyJWT EdDSA.

Run: ``.venv/bin/python benchmarks/bench_peers.py [--n 500 --reps 5]`` (``make bench-peers``
installs the peers first: ``pip install pydpop pyjwt cryptography``, kept out of the
package's dependencies). Each column verifies the same number of fresh proofs made before
timing, from the header value a server receives to a verified key with its replay entry
taken:

- ours: ``decode_header_object`` + ``parse_dpop_proof`` + ``check_dpop_proof`` (schema,
  sender constraint, binding, freshness, Ed25519 signature over the canonical body) +
  the replay reservation in :class:`MemoryReplayStore`;
- pydpop (RFC 9449, ES256): ``verify_proof`` with its ``MemoryJtiStore`` (a fresh store
  per batch; its sweep is linear in the entries it holds);
- PyJWT EdDSA: an RFC 9449-shaped ``dpop+jwt`` with an embedded OKP JWK, verified with
  ``jwt.decode`` (signature, ``iat``), ``htm``/``htu`` compared and ``jti`` kept in a dict.

Repetitions are interleaved; medians are printed, with the raw PyNaCl verify of this run.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import AGENT, CAP, CLOCK, CLOCK_NAME, NOTE, NOW, floor_us

from chio_middleware.core.dpop import (
    DpopBinding,
    check_dpop_proof,
    create_dpop_proof,
    dpop_replay_slot,
    parse_dpop_proof,
)
from chio_middleware.core.encoding import decode_header_object, encode_header_object
from chio_middleware.core.hashing import body_hash, request_binding_hash
from chio_middleware.core.replay import MemoryReplayStore

HTU = "http://127.0.0.1:8000/notes"
ACTION = request_binding_hash("POST", "/notes", {}, body_hash(NOTE))
BINDING = DpopBinding(CAP.id, "srv-notes", "write_note", ACTION)


def ours(n: int) -> Callable[[], float]:
    proofs = [
        encode_header_object(create_dpop_proof(AGENT, binding=BINDING, issued_at=NOW).to_wire())
        for _ in range(n)
    ]
    store = MemoryReplayStore(capacity=n + 1)
    subject = CAP.subject

    def run() -> float:
        start = CLOCK()
        for value in proofs:
            proof = parse_dpop_proof(decode_header_object(value, name="X-Chio-DPoP"))
            check_dpop_proof(proof, subject=subject, expected=BINDING, now=NOW)
            key, expires_at = dpop_replay_slot(proof)
            store.reserve(key, expires_at=expires_at, now=NOW)
        return (CLOCK() - start) / n * 1e6

    return run


def pydpop_verify(n: int) -> Callable[[], float] | None:
    try:
        import pydpop
    except ImportError:
        return None
    key = pydpop.generate_key("ES256")
    proofs = [
        pydpop.generate_proof(private_key=key, htm="POST", htu=HTU, iat=NOW) for _ in range(n)
    ]

    def run() -> float:
        store = pydpop.MemoryJtiStore(ttl=10**10)
        start = CLOCK()
        for proof in proofs:
            pydpop.verify_proof(proof=proof, htm="POST", htu=HTU, jti_store=store, now=NOW)
        return (CLOCK() - start) / n * 1e6

    return run


def pyjwt_eddsa(n: int) -> Callable[[], float] | None:
    try:
        import jwt
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (
            Ed25519PrivateKey,
            Ed25519PublicKey,
        )
    except ImportError:
        return None
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(AGENT.seed_hex()))
    raw_public = private.public_key().public_bytes_raw()
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw_public).rstrip(b"=").decode()}
    proofs = [
        jwt.encode(
            {"jti": uuid.uuid4().hex, "htm": "POST", "htu": HTU, "iat": NOW},
            private,
            algorithm="EdDSA",
            headers={"typ": "dpop+jwt", "jwk": jwk},
        )
        for _ in range(n)
    ]

    def run() -> float:
        seen: dict[str, int] = {}
        start = CLOCK()
        for proof in proofs:
            header = jwt.get_unverified_header(proof)
            if header.get("typ") != "dpop+jwt" or header["jwk"].get("kty") != "OKP":
                raise ValueError("not a DPoP proof")
            x = header["jwk"]["x"]
            public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))
            claims: dict[str, Any] = jwt.decode(
                proof, public, algorithms=["EdDSA"], options={"verify_iat": True, "require": ["iat", "jti"]}
            )
            if claims["htm"] != "POST" or claims["htu"] != HTU or abs(claims["iat"] - NOW) > 300:
                raise ValueError("wrong binding")
            if claims["jti"] in seen:
                raise ValueError("replay")
            seen[claims["jti"]] = claims["iat"] + 300
        return (CLOCK() - start) / n * 1e6

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    columns: dict[str, list[float]] = {}
    floors: list[float] = []
    for rep in range(args.reps):
        makers = [("ours (Ed25519, canonical JSON)", ours), ("pydpop ES256", pydpop_verify),
                  ("PyJWT EdDSA DPoP", pyjwt_eddsa)]
        for name, make in makers[rep % 3:] + makers[: rep % 3]:
            run = make(args.n)
            if run is not None:
                columns.setdefault(name, []).append(run())
        floors.append(floor_us(1000)[0])
    verify = statistics.median(floors)
    print(f"raw PyNaCl Ed25519 verify in this run: {verify:.1f} us; {args.reps} interleaved "
          f"repetitions x {args.n} fresh proofs; clock: {CLOCK_NAME} time\n")
    mine = statistics.median(columns["ours (Ed25519, canonical JSON)"])
    print(f"{'verifier':32s} {'us/proof':>9s} {'x verify':>9s} {'ours / it':>10s}")
    for name, values in columns.items():
        median = statistics.median(values)
        print(f"{name:32s} {median:9.1f} {median / verify:9.2f} {mine / median:10.2f}")
    if "pydpop ES256" in columns:
        ratio = mine / statistics.median(columns["pydpop ES256"])
        print(f"\ntarget ours / pydpop <= 0.5: {ratio:.2f} ({'met' if ratio <= 0.5 else 'NOT met'})")
    else:
        print("\npydpop is not installed (pip install pydpop): that column is missing")
    json.dumps(columns)


if __name__ == "__main__":
    main()
