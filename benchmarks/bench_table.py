"""The in-process table of issue 13: overhead per request as a multiple of its cryptography.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/bench_table.py [--reps 7 --n 200]``).

For each adapter (Starlette under the ASGI middleware, FastAPI with its integration, Flask
under the WSGI middleware) and each row, the bare app and the middleware-wrapped app answer the same requests straight
through their ASGI/WSGI callables (no sockets). Two configurations:

- *benchmark*: the in-memory sink (bounded), stdlib logging at WARNING, telemetry off;
- *defaults*: what a user gets from ``ChioSettings`` with only the keys, issuers and routes
  set: the JSONL sink (a temporary file), ``receipt_fsync="interval"``, logging unconfigured,
  ``telemetry="auto"`` (on here: the dev extra installs OpenTelemetry's API).

The floor is a raw PyNaCl Ed25519 verify and sign, timed in every repetition. Repetitions
are interleaved (every cell once per repetition, the order rotated each time); the table
shows the median over repetitions of (with - bare) and its spread (half the interquartile
range, as a percentage of the median). Every protected request carries a fresh DPoP proof
and, for the nonce row, a fresh kernel-minted execution nonce, made before timing.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    CLOCK_NAME,
    ISSUER,
    KERNEL,
    NOW,
    ROUTES,
    Request,
    asgi_caller,
    bad_proof_request,
    bound_post,
    fastapi_app,
    floor_us,
    median_spread,
    nonce_delete,
    time_batch,
    wsgi_caller,
)

from chio_middleware import ChioSettings
from chio_middleware.asgi import ChioMiddleware
from chio_middleware.core.clock import FixedClock
from chio_middleware.wsgi import ChioWSGIMiddleware
from tests.middleware.harness import flask_app, starlette_app

#: (label, request maker, expected status, floor in (verifies, signs), target bench, default)
ROWS: list[tuple[str, Callable[[], Request], int, tuple[int, int], float, float | None]] = [
    ("bound POST, capability + DPoP", bound_post, 201, (1, 1), 1.5, 2.0),
    ("+ execution nonce (DELETE)", nonce_delete, 204, (2, 1), 1.5, 2.0),
    ("unbound GET /health, receipt only", lambda: ("GET", "/health", [], b""), 200, (0, 1), 2.0, None),
    ("denied (bad proof signature)", bad_proof_request, 401, (1, 1), None, None),  # type: ignore[list-item]
]


def make_settings(config: str, tmp: Path, adapter: str) -> ChioSettings:
    values: dict[str, Any] = {
        "signing_key": KERNEL.seed_hex(),
        "trusted_issuers": [ISSUER.public_key.hex],
        "routes": ROUTES,
        # One benchmark agent sends thousands of fresh proofs: the per-subject quota of live
        # replay slots (a check that still runs on every request) is raised to fit them.
        "store_subject_quota": 10_000_000,
    }
    if config == "benchmark":
        values["receipt_sink"] = "memory"
        values["telemetry"] = "off"  # OpenTelemetry's API without an SDK is a no-op cost
    else:
        values["receipt_sink"] = f"jsonl:{tmp / f'receipts-{adapter}.jsonl'}"
    return ChioSettings(**values)


#: The adapters of the table: Starlette under ``ChioMiddleware`` and Flask under
#: ``ChioWSGIMiddleware`` with the routes in the settings; FastAPI with its integration and
#: the tools declared on the endpoints (``chio_middleware.integrations.fastapi.Chio``).
ADAPTERS = ["ASGI (Starlette)", "ASGI (FastAPI)", "WSGI (Flask)"]


def build(adapter: str, config: str | None, tmp: Path) -> Any:
    clock = FixedClock(NOW)
    if adapter == "ASGI (FastAPI)":
        from chio_middleware.integrations.fastapi import Chio

        fastapi = fastapi_app()
        if config is not None:
            settings = make_settings(config, tmp, "fastapi").model_copy(update={"routes": []})
            Chio(fastapi, settings=settings, clock=clock)
        return asgi_caller(fastapi)
    if adapter == "ASGI (Starlette)":
        app = starlette_app()
        if config is None:
            return asgi_caller(app)
        return asgi_caller(ChioMiddleware(app, settings=make_settings(config, tmp, "asgi"), clock=clock))
    flask = flask_app()
    if config is None:
        return wsgi_caller(flask.wsgi_app)
    return wsgi_caller(
        ChioWSGIMiddleware(flask.wsgi_app, settings=make_settings(config, tmp, "wsgi"), clock=clock)
    )


def set_config(config: str | None) -> None:
    """Logging as each configuration has it (structlog is never configured by either)."""
    structlog.reset_defaults()
    level = logging.WARNING if config == "benchmark" else logging.NOTSET
    logging.getLogger("chio_middleware").setLevel(level)


def run(reps: int, n: int) -> dict[str, Any]:
    adapters = ADAPTERS
    configs: list[str | None] = [None, "benchmark", "defaults"]
    results: dict[tuple[str, str | None, int], list[float]] = {}
    floors: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="chio-bench-") as tmpdir:
        tmp = Path(tmpdir)
        callers = {(a, c): build(a, c, tmp) for a in adapters for c in configs}
        cells = [(a, c, r) for a in adapters for c in configs for r in range(len(ROWS))]
        for rep in range(reps):
            floors.append(floor_us())
            shift = rep * 5 % len(cells)
            for adapter, config, row in cells[shift:] + cells[:shift]:
                make, expect = ROWS[row][1], ROWS[row][2]
                requests = [make() for _ in range(n + 1)]
                set_config(config)
                per = time_batch(callers[(adapter, config)], requests, expect if config else None)
                results.setdefault((adapter, config, row), []).append(per)
            floors.append(floor_us())
        set_config(None)
    return {"results": results, "floors": floors, "adapters": adapters}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="interleaved repetitions")
    parser.add_argument("--n", type=int, default=200, help="requests per cell and repetition")
    parser.add_argument("--json", action="store_true", help="print raw samples as JSON")
    args = parser.parse_args()
    out = run(args.reps, args.n)
    results, floors = out["results"], out["floors"]
    if args.json:
        print(json.dumps({
            "floors": floors,
            "results": {f"{a}|{c}|{r}": v for (a, c, r), v in results.items()},
        }))
        return
    verify = statistics.median(f[0] for f in floors)
    sign = statistics.median(f[1] for f in floors)
    verify_spread = median_spread([f[0] for f in floors])[1]
    print(
        f"floor in this run (raw PyNaCl, median of {len(floors)}): Ed25519 verify {verify:.1f} us "
        f"(+-{verify_spread * 100:.0f}%), sign {sign:.1f} us; "
        f"{args.reps} interleaved repetitions x {args.n} requests per cell; clock: {CLOCK_NAME} time\n"
    )
    header = (
        f"{'adapter':17s} {'request':35s} {'bare us':>8s} "
        f"{'benchmark config':>25s} {'user defaults':>25s} {'target':>13s}"
    )
    print(header)
    print("-" * len(header))
    verdicts = []
    for adapter in out["adapters"]:
        for index, (label, _, _, (nv, ns), target_b, target_d) in enumerate(ROWS):
            floor = nv * verify + ns * sign
            bare, _ = median_spread(results[(adapter, None, index)])
            cells = []
            ratios = {}
            for config in ("benchmark", "defaults"):
                overheads = [
                    w - b
                    for w, b in zip(
                        results[(adapter, config, index)], results[(adapter, None, index)], strict=True
                    )
                ]
                median, spread = median_spread(overheads)
                ratios[config] = median / floor
                cells.append(f"{median:7.1f} +-{spread * 100:3.0f}% = {median / floor:4.2f}x")
            target = ""
            if target_b is not None:
                target = f"<= {target_b}x" + (f"/{target_d}x" if target_d else "")
                met_b = ratios["benchmark"] <= target_b
                met_d = target_d is None or ratios["defaults"] <= target_d
                verdicts.append((adapter, label, met_b, met_d, ratios, target_b, target_d))
            print(f"{adapter:17s} {label:35s} {bare:8.1f} {cells[0]:>25s} {cells[1]:>25s} {target:>13s}")
        print()
    print(
        "overhead = median over repetitions of (with middleware - bare), in us, and as a multiple "
        "of the row's floor\n(bound POST and denied: verify + sign; nonce: 2 verifies + sign; "
        "unbound GET: sign). Spread: half the IQR.\n"
    )
    for adapter, label, met_b, met_d, ratios, target_b, target_d in verdicts:
        state = "met" if met_b and met_d else "NOT met"
        detail = f"benchmark {ratios['benchmark']:.2f}x (target {target_b}x)"
        if target_d is not None:
            detail += f", defaults {ratios['defaults']:.2f}x (target {target_d}x)"
        print(f"target {state:7s} {adapter:17s} {label:35s} {detail}")


if __name__ == "__main__":
    main()
