"""The in-process table in instructions: what a protected request executes, free of noise.

Run: ``make bench-instructions`` (or ``.venv/bin/python benchmarks/bench_instructions.py
[--n 60] [--rows post,get] [--config benchmark] [--before REV]``). Needs valgrind (Debian:
``apt-get install valgrind``). ``--before REV`` also counts revision ``REV`` (exported with
``git archive``): a before/after comparison that needs no alternation, since counts do not
move with the machine's load.

Time on a shared machine moves with the other jobs (the floor itself varied 2x within a
minute on the machine of BENCHMARKS.md); instructions executed do not. Each cell runs its
requests under ``valgrind --tool=callgrind`` with collection switched on only inside the
timed loop (the loop runs inside libc's ``qsort`` comparator, so ``--toggle-collect`` of
that one C function counts the loop and nothing else: no start-up, no imports, no request
building). The floor is counted the same way: raw PyNaCl verify and sign of the 600-byte
message ``bench_table.py`` times.

The table gives instructions per request, bare and with the middleware, and the overhead as
a multiple of the row's floor in instructions. Beside it, the same overhead in time from
``bench_table.py`` is larger: interpreted Python runs fewer instructions per cycle than
libsodium's arithmetic does (cache misses, indirect branches), so a microsecond of the
middleware's own code is fewer instructions than a microsecond of Ed25519. Both are printed
so that the share of each is visible.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The loop a cell runs under callgrind: the requests of ``kind`` through ``config``'s app,
#: made and warmed before, sent inside the comparator of a two-element ``qsort``.
CELL = """
import ctypes, logging, sys, tempfile
from pathlib import Path
sys.path.insert(0, {benchmarks!r})
logging.disable(logging.WARNING)
from _harness import bad_proof_request, bound_post, nonce_delete
from bench_table import build, set_config
config, adapter, kind, n = {config!r}, {adapter!r}, {kind!r}, {n!r}
make = {{"post": bound_post, "nonce": nonce_delete, "denied": bad_proof_request,
         "get": lambda: ("GET", "/health", [], b"")}}[kind]
with tempfile.TemporaryDirectory() as tmp:
    set_config(config)
    call = build(adapter, config, Path(tmp))
    expect = {{"post": 201, "nonce": 204, "denied": 401, "get": 200}}[kind]
    for _ in range(30):  # warm-up; a cell of answers it did not mean to count stops here
        status = call(*make())
        if config is not None and status != expect:
            raise SystemExit(f"{{adapter}} {{kind}} answered {{status}}, expected {{expect}}")
    requests = [make() for _ in range(n)]
    libc = ctypes.CDLL(None)
    compare = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
    def loop(a, b):
        for request in requests:
            call(*request)
        return 0
    pair = (ctypes.c_int * 2)(1, 2)
    libc.qsort(pair, 2, ctypes.sizeof(ctypes.c_int), compare(loop))
"""

FLOOR = """
import ctypes, nacl.signing
key = nacl.signing.SigningKey(b"\\x01" * 32)
message = b"x" * 600
signature = key.sign(message).signature
verify, sign = key.verify_key.verify, key.sign
libc = ctypes.CDLL(None)
compare = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
def loop(a, b):
    for _ in range({n}):
        {call}
    return 0
pair = (ctypes.c_int * 2)(1, 2)
libc.qsort(pair, 2, ctypes.sizeof(ctypes.c_int), compare(loop))
"""

#: (row, kind, verifies and signs of its floor)
ROWS = [
    ("bound POST, capability + DPoP", "post", (1, 1)),
    ("+ execution nonce (DELETE)", "nonce", (2, 1)),
    ("unbound GET /health, receipt only", "get", (0, 1)),
    ("denied (bad proof signature)", "denied", (1, 1)),
]
ADAPTERS = ["ASGI (Starlette)", "ASGI (FastAPI)", "WSGI (Flask)"]


def instructions(script: str, n: int, source: Path | None = None) -> float:
    """Instructions per iteration of ``script``'s loop, counted by callgrind (``source``:
    another checkout's tree to measure, as ``BENCH_SOURCE`` tells the harness)."""
    with tempfile.TemporaryDirectory(prefix="chio-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        program = Path(tmp) / "cell.py"
        program.write_text(script)
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                "--toggle-collect=*qsort*",
                f"--callgrind-out-file={out}",
                sys.executable,
                str(program),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0", "BENCH_SOURCE": str(source or ROOT)},
        )
        if done.returncode != 0:
            tail = "\n".join(done.stderr.splitlines()[-12:])
            raise RuntimeError(f"a callgrind cell failed (source {source or ROOT}):\n{tail}")
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1]) / n
    raise RuntimeError("callgrind wrote no totals")


def cell(config: str | None, adapter: str, kind: str, n: int, source: Path | None = None) -> float:
    script = CELL.format(
        benchmarks=str(ROOT / "benchmarks"), config=config, adapter=adapter, kind=kind, n=n
    )
    return instructions(script, n, source)


def export(rev: str, into: Path) -> Path:
    """``git archive`` of ``rev`` into ``into`` (the tree ``--before`` measures)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=60, help="requests per cell")
    parser.add_argument("--rows", default="post,nonce,get,denied")
    parser.add_argument("--config", choices=["benchmark", "defaults"], default="benchmark")
    parser.add_argument(
        "--adapters", default="asgi,wsgi", help="asgi, wsgi, starlette, fastapi, flask (comma-separated)"
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="cells at once")
    parser.add_argument("--before", metavar="REV", help="also count revision REV: a before/after column")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("bench_instructions needs valgrind (Debian: apt-get install valgrind)")
    kinds = args.rows.split(",")
    wanted = [name.strip().lower() for name in args.adapters.split(",")]
    adapters = [a for a in ADAPTERS if any(name and name in a.lower() for name in wanted)]
    cells = [
        (adapter, label, kind, floor)
        for adapter in adapters
        for label, kind, floor in ROWS
        if kind in kinds
    ]
    with tempfile.TemporaryDirectory(prefix="chio-before-") as tmp:
        before = export(args.before, Path(tmp)) if args.before else None
        # Counts do not depend on what else runs: the cells run side by side.
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            verify_job = pool.submit(instructions, FLOOR.format(n=200, call="verify(message, signature)"), 200)
            sign_job = pool.submit(instructions, FLOOR.format(n=200, call="sign(message)"), 200)
            sources = [(None, None), ("before", before)] if before is not None else [(None, None)]
            jobs = {
                (adapter, kind, config, name): pool.submit(cell, config, adapter, kind, args.n, source)
                for adapter, _, kind, _ in cells
                for config in (None, args.config)
                for name, source in sources
                if config is not None or name is None
            }
            verify, sign = verify_job.result(), sign_job.result()
            counts = {key: job.result() for key, job in jobs.items()}
    print(
        f"floor (raw PyNaCl, callgrind): Ed25519 verify {verify / 1e3:.0f}k instructions, "
        f"sign {sign / 1e3:.0f}k; {args.n} requests per cell, {args.config} configuration\n"
    )
    extra = f" {'before ' + args.before[:9]:>17s} {'change':>7s}" if args.before else ""
    header = f"{'adapter':17s} {'request':35s} {'bare':>9s} {'with':>9s} {'overhead':>9s} {'x floor':>8s}{extra}"
    print(header)
    print("-" * len(header))
    previous = None
    for adapter, label, kind, (nv, ns) in cells:
        if previous is not None and adapter != previous:
            print()
        previous = adapter
        bare = counts[(adapter, kind, None, None)]
        protected = counts[(adapter, kind, args.config, None)]
        floor = nv * verify + ns * sign
        over = protected - bare
        line = (
            f"{adapter:17s} {label:35s} {bare / 1e3:8.0f}k {protected / 1e3:8.0f}k "
            f"{over / 1e3:8.0f}k {over / floor:7.2f}x"
        )
        if args.before:
            old = counts[(adapter, kind, args.config, "before")] - bare
            line += f" {old / 1e3:8.0f}k {old / floor:6.2f}x {(over - old) / old:+7.0%}"
        print(line)
    print()
    if args.before:
        print(f"before: the overhead of revision {args.before} (its own with - this tree's bare), and the change.")
    print(
        "instructions per request (callgrind, only the loop counted); overhead = with - bare,\n"
        "as a multiple of the row's floor in instructions (bound POST and denied: verify + sign;\n"
        "nonce: 2 verifies + sign; unbound GET: sign). The bare cells of the nonce and denied\n"
        "rows run the same requests through the app without the middleware."
    )


if __name__ == "__main__":
    main()
