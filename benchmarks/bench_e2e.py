"""End-to-end load test: requests/s and p50/p99 with and without the middleware.

Run: ``make bench-e2e`` (or ``.venv/bin/python benchmarks/bench_e2e.py [--duration 5
--rounds 3 --connections 32]``). Needs ``wrk`` (Debian: ``apt-get install wrk``) and, for
uvicorn's fast loop and parser, ``uvloop`` and ``httptools`` (the ``bench`` extra).

Four servers, one worker each, on free ports of 127.0.0.1 only: uvicorn (uvloop,
httptools, no access log) + Starlette and gunicorn (sync worker) + Flask, each bare and
with the middleware under the defaults a user gets (JSONL sink in a temporary directory,
fsync interval, logging unconfigured); see ``benchmarks/e2e/app.py``. For each route
(``GET /health`` unbound, ``POST /notes`` bound and trivial, ``POST /work`` bound with
about 1 ms of CPU in the handler) wrk runs ``--duration`` seconds with 2 threads and
``--connections`` keep-alive connections, bare and protected alternately, ``--rounds``
times; medians are printed. Then each route runs once more on both sides at the same
offered load (``--paced-share`` of the slower side's closed-loop rate: every connection
pauses between requests, so the driver sets the rate), where p50/p99 are compared. Every protected request carries its own fresh DPoP proof,
made before the run (proof generation is not measured); a run that ran out of proofs
reports its replays as non-2xx answers. On uvicorn it also prints how many receipts the
middleware recorded in a worker thread (``ChioMiddleware.worker_hops``, read from the
app's ``GET /hops`` around each run): near zero when nothing else holds the log lock.

The cap: the cryptography alone bounds the ratio at bare_time / (bare_time + floor), with
bare_time = 1 / bare requests/s and floor = verify + sign for a bound POST (sign for the
unbound GET), timed in this run. The whole test is bounded: (rounds + 1) x 12 runs of
``--duration`` seconds, plus start-up and proof generation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import AGENT, NOTE, floor_us

from chio_middleware.core.dpop import DpopBinding, create_dpop_proof
from chio_middleware.core.encoding import encode_header_object
from chio_middleware.core.hashing import body_hash, request_binding_hash
from tests.middleware.harness import capability

ROOT = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
ROUTES = [
    ("GET /health (unbound)", "GET", "/health", "", None),
    ("POST /notes (bound, trivial)", "POST", "/notes", NOTE.decode(), "write_note"),
    ("POST /work (bound, ~1 ms handler)", "POST", "/work", NOTE.decode(), "work"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(server: str, chio: bool, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "E2E_CHIO": "1" if chio else "0", "E2E_DIR": str(tmp)}
    if server == "uvicorn + Starlette":
        env["E2E_FRAMEWORK"] = "starlette"
        command = [
            str(BIN / "uvicorn"), "--app-dir", str(ROOT / "e2e"), "app:asgi",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--no-access-log", "--log-level", "warning",
        ]
        for module, flag in (("uvloop", ["--loop", "uvloop"]), ("httptools", ["--http", "httptools"])):
            if _has(module):
                command += flag
    else:
        env["E2E_FRAMEWORK"] = "flask"
        command = [
            str(BIN / "gunicorn"), "--chdir", str(ROOT / "e2e"), "--workers", "1",
            "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "app:wsgi",
        ]
    process = subprocess.Popen(command, env=env, cwd=tmp)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
                if reply.status == 200:
                    return process, port
        except OSError:
            time.sleep(0.1)
    process.terminate()
    raise SystemExit(f"{server} did not start on 127.0.0.1:{port}")


def worker_hops(server: str, port: int) -> int | None:
    """The protected Starlette app's count of receipts recorded in a worker thread."""
    if server != "uvicorn + Starlette":
        return None  # WSGI records in the request's own thread
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/hops", timeout=5) as reply:
        return int(json.load(reply)["worker_hops"])


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def write_proofs(prefix: Path, path: str, tool: str, count: int, threads: int) -> None:
    now = int(time.time())
    cap = capability(issued_at=now - 60, expires_at=now + 3600)
    cap_header = encode_header_object(cap.to_wire())
    action = request_binding_hash("POST", path, {}, body_hash(NOTE))
    binding = DpopBinding(cap.id, "srv-notes", tool, action)
    for thread in range(threads):
        lines = [cap_header]
        for _ in range(count + 1):
            proof = create_dpop_proof(AGENT, binding=binding, issued_at=now)
            lines.append(encode_header_object(proof.to_wire()))
        Path(f"{prefix}.{thread}").write_text("\n".join(lines) + "\n")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def paced_script(tmp: Path) -> Path:
    """load.lua with a pause before every request: an offered load set by the driver."""
    script = tmp / "paced.lua"
    script.write_text(
        f"dofile({str(ROOT / 'e2e' / 'load.lua')!r})\n"
        "-- The pause (ms) each connection waits before its next request: the 5th argument.\n"
        "local load_init = init\n"
        "function init(args)\n  load_init(args)\n  pause = tonumber(args[5])\nend\n"
        "function delay()\n  return pause\nend\n"
    )
    return script


def wrk(
    port: int, method: str, path: str, body: str, prefix: str, args: Any,
    paced: tuple[Path, float] | None = None,
) -> dict[str, float]:
    """One wrk run: closed loop, or with ``paced`` = (script, pause in ms) a set offered load."""
    script, extra = (ROOT / "e2e" / "load.lua", []) if paced is None else (paced[0], [f"{paced[1]:.3f}"])
    command = [
        "wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s",
        "--latency", "--timeout", "10s", "-s", str(script),
        f"http://127.0.0.1:{port}", "--", method, path, body, prefix, *extra,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True,
                         timeout=args.duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {
        "rps": rps, "p50": p50, "p99": p99,
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "requests": float(total.group(1)) if total else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--servers", default="uvicorn + Starlette,gunicorn + Flask")
    parser.add_argument("--paced-share", type=float, default=0.5,
                        help="offered load of the paced runs, as a share of the slower side's rate")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    servers = args.servers.split(",")
    results: dict[tuple[str, str, bool], list[dict[str, float]]] = {}
    paced: dict[tuple[str, str, bool], dict[str, float]] = {}
    floors = []
    guess = {server: 4000.0 for server in servers}
    with tempfile.TemporaryDirectory(prefix="chio-e2e-") as tmpdir:
        tmp = Path(tmpdir)
        for server in servers:
            procs = {}
            try:
                for chio in (False, True):
                    (tmp / str(chio)).mkdir(exist_ok=True)
                    procs[chio] = start(server, chio, tmp / str(chio))
                for round_ in range(args.rounds):
                    for label, method, path, body, tool in ROUTES:
                        order = (False, True) if round_ % 2 == 0 else (True, False)
                        for chio in order:
                            prefix = "-"
                            if tool is not None:
                                prefix = str(tmp / "proofs")
                                # Each thread gets enough for the whole run alone: wrk's
                                # threads do not share the load evenly.
                                count = int(guess[server] * args.duration * 1.5) if chio else 1
                                write_proofs(Path(prefix), path, tool, count, args.threads)
                            hops_before = worker_hops(server, procs[chio][1]) if chio else None
                            run = wrk(procs[chio][1], method, path, body, prefix, args)
                            if hops_before is not None:
                                hops_after = worker_hops(server, procs[chio][1])
                                assert hops_after is not None
                                run["hops"] = float(hops_after - hops_before)
                            if chio and tool is not None:
                                guess[server] = max(guess[server] * 0.5, run["rps"])
                            results.setdefault((server, label, chio), []).append(run)
                            print(f"  {server:20s} {label:34s} {'chio' if chio else 'bare'} "
                                  f"{run['rps']:9.0f} req/s p50 {run['p50']:7.2f} ms "
                                  f"p99 {run['p99']:7.2f} ms non-2xx {run['non2xx']:.0f}"
                                  + (f" worker-thread receipts {run['hops']:.0f}" if "hops" in run else ""),
                                  flush=True)
                    floors.append(floor_us(1000))
                # The same offered load on both sides (half of the slower side's closed-loop
                # rate): each connection pauses between requests, so the rate is set by the
                # driver, not by how fast each side answers; p99 is compared there.
                script = paced_script(tmp)
                for label, method, path, body, tool in ROUTES:
                    closed = min(
                        statistics.median(r["rps"] for r in results[(server, label, chio)])
                        for chio in (False, True)
                    )
                    rate = closed * args.paced_share
                    pause_ms = args.connections / rate * 1000
                    for chio in (False, True):
                        prefix = "-"
                        if tool is not None:
                            prefix = str(tmp / "proofs")
                            count = int(rate * args.duration * 1.5) if chio else 1
                            write_proofs(Path(prefix), path, tool, count, args.threads)
                        run = wrk(procs[chio][1], method, path, body, prefix, args, (script, pause_ms))
                        run["offered"] = rate
                        paced[(server, label, chio)] = run
                        print(f"  {server:20s} {label:34s} {'chio' if chio else 'bare'} paced "
                              f"{rate:7.0f} req/s offered, {run['rps']:7.0f} served, p50 "
                              f"{run['p50']:7.2f} ms p99 {run['p99']:7.2f} ms non-2xx "
                              f"{run['non2xx']:.0f}", flush=True)
            finally:
                for process, _ in procs.values():
                    process.terminate()
                for process, _ in procs.values():
                    process.wait(timeout=30)
    verify = statistics.median(f[0] for f in floors)
    sign = statistics.median(f[1] for f in floors)
    print(f"\nfloor in this run: verify {verify:.1f} us, sign {sign:.1f} us; wrk -t{args.threads} "
          f"-c{args.connections} -d{args.duration}s, {args.rounds} interleaved rounds, medians\n")
    header = (f"{'server, 1 worker':20s} {'route':34s} {'req/s chio / bare':>20s} {'ratio':>6s} "
              f"{'cap':>5s} {'of cap':>7s} {'p50 ms chio/bare':>17s} {'p99 ms chio/bare':>17s} {'p99 x':>6s}")
    print(header)
    print("-" * len(header))
    verdicts = []
    for server in servers:
        for label, _, _, _, tool in ROUTES:
            bare = results[(server, label, False)]
            mine = results[(server, label, True)]
            med = {key: (statistics.median(r[key] for r in mine), statistics.median(r[key] for r in bare))
                   for key in ("rps", "p50", "p99")}
            ratio = med["rps"][0] / med["rps"][1]
            floor = (verify + sign) if tool is not None else sign
            bare_us = 1e6 / med["rps"][1]
            cap = bare_us / (bare_us + floor)
            p99x = med["p99"][0] / med["p99"][1]
            replays = sum(r["non2xx"] for r in mine)
            print(f"{server:20s} {label:34s} {med['rps'][0]:9.0f} / {med['rps'][1]:8.0f} {ratio:6.2f} "
                  f"{cap:5.2f} {ratio / cap:7.2f} {med['p50'][0]:8.2f}/{med['p50'][1]:8.2f} "
                  f"{med['p99'][0]:8.2f}/{med['p99'][1]:8.2f} {p99x:6.2f}"
                  + (f"  ({replays:.0f} non-2xx)" if replays else ""))
            if tool == "work":
                verdicts.append((server, label, f"ratio {ratio:.2f} (target >= 0.85)", ratio >= 0.85))
            elif tool is not None:
                verdicts.append((server, label, f"{ratio / cap:.2f} of the cap {cap:.2f} (target >= 0.7)",
                                 ratio / cap >= 0.7))
            if tool is not None:
                mine_p, bare_p = paced[(server, label, True)], paced[(server, label, False)]
                paced_x = mine_p["p99"] / bare_p["p99"]
                verdicts.append((server, label, f"p99 {paced_x:.2f}x bare at the same offered load "
                                 f"({mine_p['offered']:.0f} req/s; target <= 1.5x)", paced_x <= 1.5))
    print(f"\nat the same offered load ({args.paced_share:.0%} of the slower side's closed-loop rate; "
          "each connection pauses between requests):\n")
    header = (f"{'server, 1 worker':20s} {'route':34s} {'offered':>8s} {'served chio/bare':>17s} "
              f"{'p50 ms chio/bare':>17s} {'p99 ms chio/bare':>17s} {'p99 x':>6s}")
    print(header)
    print("-" * len(header))
    for server in servers:
        for label, *_ in ROUTES:
            mine_p, bare_p = paced[(server, label, True)], paced[(server, label, False)]
            print(f"{server:20s} {label:34s} {mine_p['offered']:8.0f} "
                  f"{mine_p['rps']:8.0f}/{bare_p['rps']:8.0f} "
                  f"{mine_p['p50']:8.2f}/{bare_p['p50']:8.2f} {mine_p['p99']:8.2f}/{bare_p['p99']:8.2f} "
                  f"{mine_p['p99'] / bare_p['p99']:6.2f}")
    print()
    for server in servers:
        counted = [r for label, *_ in ROUTES for r in results[(server, label, True)] if "hops" in r]
        if counted:
            hops = sum(r["hops"] for r in counted)
            total = sum(r["requests"] for r in counted)
            print(f"receipts recorded in a worker thread ({server}, closed-loop runs): "
                  f"{hops:.0f} of {total:.0f} requests ({hops / max(total, 1):.2%})")
    print()
    for server, label, text, met in verdicts:
        print(f"target {'met' if met else 'NOT met':7s} {server:20s} {label:34s} {text}")


if __name__ == "__main__":
    main()
