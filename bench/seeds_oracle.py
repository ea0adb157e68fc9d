"""How cheap can any fixed allocation of seeds be at the paper's truth (Table 2)? For each uniform seed count S,
the cheapest allocation found by a greedy search over seeds per row role (BaseNet, + ASPP, + skip, + fusion,
IFBFNet; the same at both depths) that still resolves as many claims after Holm as uniform S, on the same
simulated worlds (tests/simworld.py, the report's own verdicts). An allocation chosen knowing the truth is the
best a procedure that learns it (``--seeds auto``) could aim at, before paying for its looks:

    .venv/bin/python bench/seeds_oracle.py --sims 12 --rho 0 --uniform 8 10 12
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from simworld import Table, World  # noqa: E402
from test_seeds_auto_cost import IMAGE_NOISE, TABLE2, report, truth  # noqa: E402

ROLES = ("BaseNet", "+ ASPP", "+ ASPP + skip", "+ ASPP + skip + fusion", "IFBFNet")
STEPS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24)


def seeds_of(allocation: tuple[int, ...]) -> dict[str, int]:
    """Seeds per row of Table 2 from seeds per role (both depths alike)."""
    out = {}
    for depth in ("R50", "R101"):
        for role, n in zip(ROLES, allocation):
            out[f"{depth} {role}"] = n
    assert set(out) == {r.name for r in TABLE2.runnable()}, "Table 2's rows changed: update ROLES"
    return out


def resolved(tables: list[Table], allocation: tuple[int, ...]) -> float:
    return float(np.mean([report(t.rows(seeds_of(allocation)))[0] for t in tables]))


def cheapest(tables: list[Table], start: int, target: float) -> tuple[tuple[int, ...], float]:
    """Greedy: lower one role a step at a time (the step that loses least) while the mean stays ≥ target."""
    current = (start,) * len(ROLES)
    while True:
        tries = []
        for i, n in enumerate(current):
            lower = max((s for s in STEPS if s < n), default=None)
            if lower is not None:
                candidate = current[:i] + (lower,) + current[i + 1:]
                tries.append((resolved(tables, candidate), candidate))
        good = [(score, c) for score, c in tries if score >= target]
        if not good:
            return current, resolved(tables, current)
        current = max(good, key=lambda sc: (sc[0], -sum(sc[1])))[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=12)
    parser.add_argument("--rho", type=float, default=0.0)
    parser.add_argument("--uniform", type=int, nargs="+", default=[8, 10, 12])
    args = parser.parse_args()
    start = time.perf_counter()
    tables = [Table(World(np.random.default_rng([1000 + sim, int(10 * args.rho)]), IMAGE_NOISE), truth(), 1.0,
                    args.rho) for sim in range(args.sims)]
    print(f"{args.sims} worlds at rho = {args.rho}; roles: {', '.join(ROLES)} (R50 and R101 alike)")
    print("uniform  trainings  resolved   cheapest allocation found   trainings  resolved  ratio")
    for s in args.uniform:
        target = resolved(tables, (s,) * len(ROLES))
        best, got = cheapest(tables, s, target)
        cost = 2 * sum(best)
        print(f"{s:7d}  {10 * s:9d}  {target:8.2f}   {str(best):26s}  {cost:9d}  {got:8.2f}  {cost / (10 * s):.2f}",
              flush=True)
    print(f"({(time.perf_counter() - start) / 60:.1f} min)")


if __name__ == "__main__":
    main()
