"""The pathological constraint inputs of issue 8 (finding 5), old engine next to new.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/bench_constraints.py``). For each
input size it prints the time of the backtracking approach the middleware used before
(Python ``re``), measured in this same run on inputs small enough to finish, next to the
linear engines it uses now (RE2 for ``regex_match``, the linear ``*``-glob for
``domain_glob``), and their ratio. The old approach is not run on the full-size inputs:
its time grows exponentially (regex) or quadratically (glob) in the input length.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from chio_middleware.core.constraints import constraint_holds
from chio_middleware.core.models import Constraint

EVIL = r"^([a-zA-Z0-9]+\s?)*$"
GLOB = "*.*.*.good.com"


def seconds(fn: Callable[[], object], *, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def show(value: float | None) -> str:
    if value is None:
        return "(not run)"
    return f"{value * 1e3:10.3f} ms" if value >= 1e-3 else f"{value * 1e6:10.1f} us"


def ratio(old: float | None, new: float) -> str:
    return f"{old / new:10.0f}x" if old is not None and new > 0 else ""


def old_glob(pattern: str) -> re.Pattern[str]:
    # What grants.py did before: each '*' became '.*', matched with backtracking re.
    return re.compile(".*".join(re.escape(p) for p in pattern.split("*")), re.DOTALL)


def bench_regex() -> None:
    print(f"regex_match {EVIL!r} on 'a' * n + '!' (no match)")
    print(f"{'n':>8} {'Python re (old)':>16} {'RE2 (new)':>16} {'old/new':>11}")
    backtracking = re.compile(EVIL)
    constraint = Constraint(type="regex_match", value=EVIL)
    for n in (16, 18, 20, 22, 35, 65_536):
        text = "a" * n + "!"
        old = seconds(lambda t=text: backtracking.search(t), repeat=1) if n <= 22 else None
        assert not constraint_holds(constraint, {"x": text})
        new = seconds(lambda t=text: constraint_holds(constraint, {"x": t}))
        print(f"{n:>8} {show(old):>16} {show(new):>16} {ratio(old, new):>11}")
    print("  (Python re doubles per added character: 35 characters would take ~8,000x n=22)")


def bench_glob() -> None:
    print(f"\ndomain_glob {GLOB!r} on a host of n bytes ('a.' * (n/2) + 'evil.com', no match)")
    print(f"{'n':>8} {'Python re (old)':>16} {'linear (new)':>16} {'old/new':>11}")
    backtracking = old_glob(GLOB)
    constraint = Constraint(type="domain_glob", value=GLOB)
    for n in (512, 1_024, 2_048, 16_384, 65_536):
        host = "a." * (n // 2) + "evil.com"
        old = seconds(lambda h=host: backtracking.fullmatch(h), repeat=1) if n <= 2_048 else None
        assert not constraint_holds(constraint, {"host": host})
        new = seconds(lambda h=host: constraint_holds(constraint, {"host": h}))
        print(f"{n:>8} {show(old):>16} {show(new):>16} {ratio(old, new):>11}")
    print("  (the old glob is cubic here, three '*': a 64 KB host would take 32^3 x n=2048, hours)")


def main() -> None:
    bench_regex()
    bench_glob()


if __name__ == "__main__":
    main()
