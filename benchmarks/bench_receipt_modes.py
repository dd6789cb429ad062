"""What ``receipt_mode="decision"`` costs against ``"final"``, side by side in one run.

Run: ``.venv/bin/python benchmarks/bench_receipt_modes.py``. The same bound request
(capability + DPoP + guards, a fresh proof each time) goes straight into the ASGI and WSGI
callables, with the memory sink and with the chained JSONL sink (fsync policies
``interval``, the default, and ``always``). Decision mode signs and records a second receipt
before the app runs, so it costs about one more signature and one more log line.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_middleware import NOTE, asgi_caller, wsgi_caller
from chio_middleware import ChioSettings
from chio_middleware.asgi import ChioMiddleware
from chio_middleware.core.clock import FixedClock
from chio_middleware.core.replay import MemoryReplayStore
from chio_middleware.sinks import MemorySink, ReceiptSink
from chio_middleware.sinks.jsonl import JsonlSink
from chio_middleware.wsgi import ChioWSGIMiddleware
from tests.middleware.harness import (
    ISSUER,
    KERNEL,
    NOW,
    ROUTES,
    agent_headers,
    flask_app,
    starlette_app,
)

N = 2000


def per_request_us(calls: dict[str, Callable[..., None]], requests: dict[str, list[Any]]) -> dict[str, float]:
    """Best per-request time of each caller, over rounds that alternate between them
    (so a load spike on this shared machine hits both modes alike)."""
    rounds, best = 6, dict.fromkeys(calls, float("inf"))
    iterators = {mode: iter(requests[mode]) for mode in calls}
    for _ in range(rounds):
        for mode, call in calls.items():
            it = iterators[mode]
            number = len(requests[mode]) // rounds
            elapsed = timeit.timeit(lambda c=call, i=it: c(*next(i)), number=number)
            best[mode] = min(best[mode], elapsed / number * 1e6)
    return best


def wrapped(adapter: str, mode: str, sink: ReceiptSink) -> Callable[..., None]:
    settings = ChioSettings(
        signing_key=KERNEL.seed_hex(),
        trusted_issuers=[ISSUER.public_key.hex],
        routes=ROUTES,
        receipt_sink="memory",
        receipt_mode=mode,
        telemetry="off",
    )
    options: dict[str, Any] = {
        "settings": settings,
        "clock": FixedClock(NOW),
        "store": MemoryReplayStore(capacity=4 * N),
        "sink": sink,
    }
    if adapter == "ASGI (Starlette)":
        return asgi_caller(ChioMiddleware(starlette_app(), **options))
    app = flask_app()
    return wsgi_caller(ChioWSGIMiddleware(app.wsgi_app, **options))


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(f"{'adapter':18s} {'sink':22s} {'final us':>9s} {'decision us':>12s} {'ratio':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        for adapter in ("ASGI (Starlette)", "WSGI (Flask)"):
            for sink_name in ("memory", "jsonl fsync=interval", "jsonl fsync=always"):
                calls: dict[str, Callable[..., None]] = {}
                requests: dict[str, list[Any]] = {}
                sinks: list[ReceiptSink] = []
                for mode in ("final", "decision"):
                    if sink_name == "memory":
                        sink: ReceiptSink = MemorySink()
                        count = N
                    else:
                        policy = sink_name.rpartition("=")[2]
                        path = Path(tmp) / f"{adapter[:4]}-{policy}-{mode}.jsonl"
                        sink = JsonlSink(path, fsync=policy, max_bytes=0)
                        count = N if policy == "interval" else N // 5
                    sinks.append(sink)
                    calls[mode] = wrapped(adapter, mode, sink)
                    requests[mode] = [
                        ("POST", "/notes", agent_headers("POST", "/notes", NOTE), NOTE)
                        for _ in range(count)
                    ]
                best = per_request_us(calls, requests)
                for sink in sinks:
                    sink.close()
                final, decision = best["final"], best["decision"]
                print(
                    f"{adapter:18s} {sink_name:22s} {final:9.1f} {decision:12.1f} "
                    f"{decision / final:6.2f}"
                )


if __name__ == "__main__":
    main()
