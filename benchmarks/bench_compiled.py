"""Would compiling the request path close the gap? This tree, against a copy of it whose
request-path modules Cython compiled, unchanged, in instructions and in time.

Run: ``make bench-compiled`` (or ``.venv/bin/python benchmarks/bench_compiled.py
[--rows post,get] [--n 20] [--rounds 3] [--no-instructions]``). Needs Cython (the ``bench`` extra has it), a C
compiler and the Python headers; the instruction columns need valgrind.

The copy (this working tree's ``chio_middleware`` and ``tests``, in a temporary directory)
has the modules of :data:`MODULES` built in place with ``cythonize`` in pure Python mode
(``language_level=3``, ``binding=True``); everything else stays Python, and nothing in
this tree changes. Modules that define pydantic models cannot be compiled (pydantic
refuses compiled methods as fields without annotations), so ``core/routing.py``,
``core/models.py`` and the settings stay interpreted in both.

Then, for each row: instructions per request under callgrind (``bench_instructions``'s
cells, bare and with the middleware, for each tree), and the in-process table's overhead
ratio in time (``compare.py``'s rounds: ``bench_table.py --json`` of each tree in its own
process, alternately). Instructions show what compiling removes; time shows whether it
is faster, which on the interpreter's C work it need not be.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_instructions import ROWS, cell  # noqa: E402
from bench_table import ROWS as TABLE_ROWS  # noqa: E402
from compare import measure, ratios, snapshot  # noqa: E402

#: The two adapters of the earlier figures (FastAPI's integration was not compiled then).
ADAPTERS = ["ASGI (Starlette)", "WSGI (Flask)"]

#: The request path: what a bound POST and an unbound GET run of the package, but for the
#: modules that define pydantic models.
MODULES = [
    "chio_middleware/_speedups.py",
    "chio_middleware/asgi.py",
    "chio_middleware/runtime.py",
    "chio_middleware/core/arguments.py",
    "chio_middleware/core/canonical.py",
    "chio_middleware/core/capability.py",
    "chio_middleware/core/clock.py",
    "chio_middleware/core/constraints.py",
    "chio_middleware/core/context.py",
    "chio_middleware/core/crypto.py",
    "chio_middleware/core/dpop.py",
    "chio_middleware/core/encoding.py",
    "chio_middleware/core/engine.py",
    "chio_middleware/core/grants.py",
    "chio_middleware/core/guards.py",
    "chio_middleware/core/hashing.py",
    "chio_middleware/core/inputs.py",
    "chio_middleware/core/nonce.py",
    "chio_middleware/core/receipts.py",
    "chio_middleware/core/replay.py",
    "chio_middleware/core/request.py",
    "chio_middleware/integrations/_declare.py",
    "chio_middleware/integrations/starlette_routing.py",
]

BUILD = """
import sys
from setuptools import Distribution
from setuptools.command.build_ext import build_ext
from Cython.Build import cythonize

modules = sys.argv[1:]
extensions = cythonize(
    modules,
    compiler_directives={"language_level": 3, "binding": True},
    nthreads=2,
    quiet=True,
)
distribution = Distribution({"ext_modules": extensions})
command = build_ext(distribution)
command.inplace = True
command.parallel = 2
command.ensure_finalized()
command.run()
"""


def compiled_copy(into: Path) -> Path:
    """This tree's package and tests in ``into``, with :data:`MODULES` compiled in place."""
    snapshot(into)
    done = subprocess.run(
        [sys.executable, "-c", BUILD, *MODULES], cwd=into, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit("the Cython build failed:\n" + "\n".join(done.stderr.splitlines()[-20:]))
    built = sorted(into.glob("chio_middleware/**/*.so"))
    if len(built) != len(MODULES):
        raise SystemExit(f"expected {len(MODULES)} compiled modules, found {len(built)}")
    return into


def print_instructions(copy: Path, kinds: list[str], n: int) -> None:
    """Instructions per request, bare and with the middleware, of this tree and ``copy``."""
    trees = (("python", None), ("compiled", copy))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        jobs = {
            (adapter, kind, config, name): pool.submit(cell, config, adapter, kind, n, source)
            for adapter in ADAPTERS
            for kind in kinds
            for config in (None, "benchmark")
            for name, source in trees
        }
        counts = {key: job.result() / 1e3 for key, job in jobs.items()}
    header = (
        f"{'adapter':17s} {'request':35s} {'bare py':>8s} {'bare cy':>8s} "
        f"{'with py':>8s} {'with cy':>8s} {'change':>7s}"
    )
    print(header)
    print("-" * len(header))
    for adapter in ADAPTERS:
        for label, kind, _ in ROWS:
            if kind not in kinds:
                continue
            bare_py, bare_cy = (counts[(adapter, kind, None, name)] for name, _ in trees)
            with_py, with_cy = (counts[(adapter, kind, "benchmark", name)] for name, _ in trees)
            change = (with_cy - with_py) / (with_py - bare_py)
            print(
                f"{adapter:17s} {label:35s} {bare_py:7.0f}k {bare_cy:7.0f}k "
                f"{with_py:7.0f}k {with_cy:7.0f}k {change:+7.1%}"
            )
    print(
        "\ninstructions per request (callgrind, benchmark configuration, "
        f"{n} requests a cell); change = (with cy - with py) / (with py - bare py):\n"
        "the compiled copy's share of the interpreted overhead. The bare app runs none of the\n"
        "compiled code; its count still moves with the objects the process holds.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="post,get")
    parser.add_argument("--n", type=int, default=20, help="requests per callgrind cell")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds")
    parser.add_argument("--timed-n", type=int, default=200, help="requests per timed cell")
    parser.add_argument("--no-instructions", action="store_true", help="time only")
    args = parser.parse_args()
    try:
        import Cython
    except ImportError:
        raise SystemExit("bench_compiled needs Cython: .venv/bin/pip install 'cython>=3.0'") from None
    kinds = args.rows.split(",")
    with tempfile.TemporaryDirectory(prefix="chio-compiled-") as tmp:
        copy = compiled_copy(Path(tmp))
        print(f"Cython {Cython.__version__}: {len(MODULES)} modules compiled in a copy of this tree\n")
        if args.no_instructions:
            pass  # time only
        elif shutil.which("valgrind") is None:
            print("(no valgrind: instruction columns skipped; Debian: apt-get install valgrind)\n")
        else:
            print_instructions(copy, kinds, args.n)
        samples: dict[str, list[dict[tuple[str, str, int], float]]] = {"python": [], "compiled": []}
        order = [("python", ROOT), ("compiled", copy)]
        for round_ in range(args.rounds):
            for name, source in order if round_ % 2 == 0 else order[::-1]:
                samples[name].append(ratios(measure(source, args.timed_n)))
    print(
        f"time: overhead as a multiple of the row's floor, median of {args.rounds} alternating "
        f"rounds x {args.timed_n} requests a cell (process CPU time)\n"
    )
    print(f"{'adapter':17s} {'request':35s} {'config':10s} {'python':>7s} {'compiled':>9s} {'change':>7s}")
    for key in samples["python"][0]:
        adapter, config, row = key
        if config != "benchmark":
            continue
        py = statistics.median(s[key] for s in samples["python"])
        cy = statistics.median(s[key] for s in samples["compiled"])
        print(f"{adapter:17s} {TABLE_ROWS[row][0]:35s} {config:10s} {py:6.2f}x {cy:8.2f}x {(cy / py - 1) * 100:+6.0f}%")


if __name__ == "__main__":
    main()
