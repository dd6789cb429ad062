"""Would the Ed25519 calls on a second core help? Issue 13's last design direction, measured.

Run: ``.venv/bin/python benchmarks/bench_offload.py [--requests 3000] [--concurrency 32]
[--work-us 200] [--rounds 3]``.

A protected request is modelled as the middleware's own Python work (a pure-Python loop
calibrated to ``--work-us``: ``bench_table.py``'s overhead minus its floor, about 200 us on
the machine of BENCHMARKS.md) around one Ed25519 verify and one sign of real PyNaCl, a
``await`` apart as in the middleware. ``--concurrency`` such requests at a time run on one
asyncio loop, and the wall-clock throughput is compared, interleaved over ``--rounds``:

- **inline**: verify and sign called on the loop, as the middleware does;
- **offloaded**: each call sent to the loop's default thread pool (``asyncio.to_thread``).
  PyNaCl's cffi calls release the GIL, so libsodium can run on the other core while the
  loop runs another request's Python;
- **hop only**: the same two thread hops around calls that do nothing, i.e. what a hop
  costs the loop, without the overlap.

The model leaves out the server and the load generator: on a two-core machine running
wrk and uvicorn (``make bench-e2e``) the second core is not free, so this is the most that
offloading could give.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import _MSG, _RAW, _SIG  # the floor's key, message and signature


def python_work(iterations: int) -> int:
    """Interpreter work of the middleware's kind: small dicts, strings, attribute calls."""
    total = 0
    for index in range(iterations):
        record = {"id": index, "name": "x" * (index % 7), "ok": index & 1 == 0}
        total += len(record["name"]) + (1 if record.get("ok") else 0)
    return total


def calibrate(work_us: float) -> int:
    """Iterations of :func:`python_work` that take ``work_us`` of this thread's time."""
    iterations = 1000
    while True:
        start = time.perf_counter()
        for _ in range(20):
            python_work(iterations)
        elapsed = (time.perf_counter() - start) / 20 * 1e6
        if elapsed > 2000:
            return max(1, round(iterations * work_us / elapsed))
        iterations *= 2


def _noop() -> None:
    return None


def run_mode(mode: str, requests: int, concurrency: int, iterations: int) -> float:
    """Requests per second of ``requests`` modelled requests, ``concurrency`` at a time."""
    verify, sign = _RAW.verify_key.verify, _RAW.sign

    async def call(fn: Callable[..., object], *args: object) -> None:
        if mode == "inline":
            fn(*args)
        elif mode == "offloaded":
            await asyncio.to_thread(fn, *args)
        else:  # hop only: the same hops, the calls made inline
            fn(*args)
            await asyncio.to_thread(_noop)

    async def main() -> float:
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                python_work(iterations // 2)
                await call(verify, _MSG, _SIG)
                python_work(iterations // 2)
                await call(sign, _MSG)
                await asyncio.sleep(0)  # the response is sent: another request runs

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - start)

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--work-us", type=float, default=200.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    iterations = calibrate(args.work_us)
    modes = ["inline", "offloaded", "hop only"]
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    for round_ in range(args.rounds):
        for mode in modes[round_ % 3 :] + modes[: round_ % 3]:  # rotated each round
            rates[mode].append(run_mode(mode, args.requests, args.concurrency, iterations))
    load = os.getloadavg()[0]
    print(
        f"{args.requests} modelled requests per round ({args.work_us:.0f} us of Python + one "
        f"Ed25519 verify + one sign), {args.concurrency} at a time on one asyncio loop, "
        f"{args.rounds} interleaved rounds, wall clock; {os.cpu_count()} CPUs, load {load:.2f}\n"
    )
    inline = statistics.median(rates["inline"])
    for mode in modes:
        rate = statistics.median(rates[mode])
        spread = (max(rates[mode]) - min(rates[mode])) / 2 / rate
        print(f"{mode:10s} {rate:8.0f} requests/s (+-{spread:4.0%})  {rate / inline:5.2f}x inline")
    hop_us = (1 / statistics.median(rates["hop only"]) - 1 / inline) / 2 * 1e6
    print(f"\none thread hop costs the loop {hop_us:.1f} us (two per request)")


if __name__ == "__main__":
    main()
