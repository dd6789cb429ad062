"""Before/after in one run: the in-process table for another revision and for this tree.

Run: ``.venv/bin/python benchmarks/compare.py --before <rev> [--after <rev>] [--rounds 5]``.
``git archive`` exports each revision named into a temporary directory (``--after``
defaults to a copy of this working tree); ``bench_table.py --json`` of this tree then measures each
source in its own process, alternately, ``--rounds`` times. The figures are medians over
rounds of (with - bare) as a multiple of the row's floor, each round's floor its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_table import ROWS  # noqa: E402


def export(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def snapshot(into: Path) -> Path:
    """This working tree's package and tests, copied into ``into`` (editing the tree during a
    run then changes nothing measured)."""
    for part in ("chio_middleware", "tests"):
        shutil.copytree(ROOT / part, into / part, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return into


def measure(source: Path, n: int) -> dict[str, object]:
    env = {**os.environ, "BENCH_SOURCE": str(source)}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_table.py"), "--json", "--reps", "1", "--n", str(n)],
        capture_output=True, text=True, check=True, env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def ratios(sample: dict[str, object]) -> dict[tuple[str, str, int], float]:
    floors = sample["floors"]
    verify = statistics.median(f[0] for f in floors)  # type: ignore[attr-defined, index]
    sign = statistics.median(f[1] for f in floors)  # type: ignore[attr-defined, index]
    results = sample["results"]
    out = {}
    for key, values in results.items():  # type: ignore[attr-defined]
        adapter, config, row = key.split("|")
        if config == "None":
            continue
        nv, ns = ROWS[int(row)][3]
        bare = results[f"{adapter}|None|{row}"][0]  # type: ignore[index]
        out[(adapter, config, int(row))] = (values[0] - bare) / (nv * verify + ns * sign)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", default=None, help="a revision (default: this working tree)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chio-compare-") as tmp:
        before = export(args.before, Path(tmp) / "before")
        if args.after:
            after = export(args.after, Path(tmp) / "after")
        else:
            after = snapshot(Path(tmp) / "after")
        samples: dict[str, list[dict[tuple[str, str, int], float]]] = {"before": [], "after": []}
        for round_ in range(args.rounds):
            order = [("before", before), ("after", after)]
            for name, source in order if round_ % 2 == 0 else order[::-1]:
                samples[name].append(ratios(measure(source, args.n)))
    print(f"before = {args.before}, after = {args.after or 'working tree'}; {args.rounds} alternating "
          f"rounds x {args.n} requests per cell; overhead as a multiple of the row's floor (median)\n")
    print(f"{'adapter':17s} {'request':35s} {'config':10s} {'before':>7s} {'after':>7s} {'change':>7s}")
    for key in samples["before"][0]:
        b = statistics.median(s[key] for s in samples["before"])
        a = statistics.median(s[key] for s in samples["after"])
        adapter, config, row = key
        print(f"{adapter:17s} {ROWS[row][0]:35s} {config:10s} {b:6.2f}x {a:6.2f}x {(a / b - 1) * 100:+6.0f}%")


if __name__ == "__main__":
    main()
