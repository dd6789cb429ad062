"""The in-process table in instructions: what a protected request executes, free of noise.

Run: ``make bench-instructions`` (or ``.venv/bin/python benchmarks/bench_instructions.py
[--n 60] [--rows post,get] [--config benchmark]``). Needs valgrind (Debian: ``apt-get
install valgrind``).

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
import tempfile
from concurrent.futures import ThreadPoolExecutor
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
    for _ in range(30):
        call(*make())
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
ADAPTERS = ["ASGI (Starlette)", "WSGI (Flask)"]


def instructions(script: str, n: int) -> float:
    """Instructions per iteration of ``script``'s loop, counted by callgrind."""
    with tempfile.TemporaryDirectory(prefix="chio-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        source = Path(tmp) / "cell.py"
        source.write_text(script)
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                "--toggle-collect=*qsort*",
                f"--callgrind-out-file={out}",
                sys.executable,
                str(source),
            ],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1]) / n
    raise RuntimeError("callgrind wrote no totals")


def cell(config: str | None, adapter: str, kind: str, n: int) -> float:
    script = CELL.format(
        benchmarks=str(ROOT / "benchmarks"), config=config, adapter=adapter, kind=kind, n=n
    )
    return instructions(script, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=60, help="requests per cell")
    parser.add_argument("--rows", default="post,nonce,get,denied")
    parser.add_argument("--config", choices=["benchmark", "defaults"], default="benchmark")
    parser.add_argument("--adapters", default="asgi,wsgi")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="cells at once")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("bench_instructions needs valgrind (Debian: apt-get install valgrind)")
    kinds = args.rows.split(",")
    adapters = [a for a in ADAPTERS if a.split()[0].lower() in args.adapters.split(",")]
    cells = [
        (adapter, label, kind, floor)
        for adapter in adapters
        for label, kind, floor in ROWS
        if kind in kinds
    ]
    # Counts do not depend on what else runs: the cells run side by side.
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        verify_job = pool.submit(instructions, FLOOR.format(n=200, call="verify(message, signature)"), 200)
        sign_job = pool.submit(instructions, FLOOR.format(n=200, call="sign(message)"), 200)
        jobs = {
            (adapter, kind, config): pool.submit(cell, config, adapter, kind, args.n)
            for adapter, _, kind, _ in cells
            for config in (None, args.config)
        }
        verify, sign = verify_job.result(), sign_job.result()
        counts = {key: job.result() for key, job in jobs.items()}
    print(
        f"floor (raw PyNaCl, callgrind): Ed25519 verify {verify / 1e3:.0f}k instructions, "
        f"sign {sign / 1e3:.0f}k; {args.n} requests per cell, {args.config} configuration\n"
    )
    header = f"{'adapter':17s} {'request':35s} {'bare':>9s} {'with':>9s} {'overhead':>9s} {'x floor':>8s}"
    print(header)
    print("-" * len(header))
    previous = None
    for adapter, label, kind, (nv, ns) in cells:
        if previous is not None and adapter != previous:
            print()
        previous = adapter
        bare, protected = counts[(adapter, kind, None)], counts[(adapter, kind, args.config)]
        floor = nv * verify + ns * sign
        over = protected - bare
        print(
            f"{adapter:17s} {label:35s} {bare / 1e3:8.0f}k {protected / 1e3:8.0f}k "
            f"{over / 1e3:8.0f}k {over / floor:7.2f}x"
        )
    print()
    print(
        "instructions per request (callgrind, only the loop counted); overhead = with - bare,\n"
        "as a multiple of the row's floor in instructions (bound POST and denied: verify + sign;\n"
        "nonce: 2 verifies + sign; unbound GET: sign). The bare cells of the nonce and denied\n"
        "rows run the same requests through the app without the middleware."
    )


if __name__ == "__main__":
    main()
