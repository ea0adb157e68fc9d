"""Training noise between seeds on real trainings: per-row σ, the correlation of paired seed effects within
each claim, and σ_d, the std of a claim's per-seed difference d_s = m_A,s − m_B,s (docs/verdicts.md).

Trains (through reproduce.py's local executor, so every run is the cell ``--seeds K`` would plan, reused by
later reports) the rows named, K seeds each, then reads their metrics.json and prints the figures:

    .venv/bin/python bench/seed_noise.py --table 2 --preset smoke --seeds 6 --rows R50
    .venv/bin/python bench/seed_noise.py --table 2 --preset smoke --seeds 6 --rows R50 --no-train  # read only

``--rows`` keeps the rows whose name starts with it (R50: the five R50 rows of Table 2). Only claims whose two
sides are single rows among those kept are measured.
"""

from __future__ import annotations

import argparse
import math
import types
from pathlib import Path

import numpy as np

from ifbf.experiments import RowSeeds, load_preset, load_table
from ifbf.orchestrate.cluster import load_profile
from ifbf.orchestrate.executors import make_executor
from ifbf.orchestrate.plan import build_plan
from ifbf.orchestrate.reproduce import _train_what_is_missing
from ifbf.report import records
from ifbf.report.claims import load_claims
from ifbf.store.rundir import RESULTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=int, default=2)
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--rows", default="R50", help="keep the rows whose name starts with this")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-train", action="store_true", help="read what is there; train nothing")
    args = parser.parse_args()
    table, preset = load_table(args.table), load_preset(args.preset)
    names = [r.name for r in table.runnable() if r.name.startswith(args.rows)]
    seeds = RowSeeds(1, tuple((table.number, name, args.seeds) for name in names))
    if not args.no_train:
        plan = build_plan([table], preset, seeds, args.results, ())
        executor = make_executor("local", load_profile("local"), 1)
        _train_what_is_missing(plan, types.SimpleNamespace(rerun_failed=False, no_wait=False, results=args.results), executor)
    frame = records.collect([table], preset, seeds, args.results)
    mine = frame[frame["row"].isin(names) & frame["miou"].notna()]
    per_row = {row: dict(zip(g["seed"], 100 * g["miou"])) for row, g in mine.groupby("row", sort=False)}
    report(per_row, [c for c in load_claims(table.number) if c.kind == "delta"
                     and all(len(side) == 1 and side[0] in per_row for side in c.rows)])


def report(per_row: dict[str, dict[int, float]], claims: list) -> None:
    print("row                              seeds   mean    std")
    pooled, df = 0.0, 0
    for row, values in per_row.items():
        v = np.array(list(values.values()))
        std = float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
        pooled, df = pooled + (len(v) - 1) * std**2, df + len(v) - 1
        print(f"{row:32s} {len(v):5d} {v.mean():6.2f} {std:6.2f}")
    print(f"pooled within-row σ = {math.sqrt(pooled / df):.2f} ({df} df)\n")
    print("claim              seeds     Δ     σ_d   ρ(seed effects)  σ_d if ρ=0")
    sd_pooled, sd_df = 0.0, 0
    for claim in claims:
        a, b = per_row[claim.rows[0][0]], per_row[claim.rows[1][0]]
        common = sorted(set(a) & set(b))
        x, y = np.array([a[s] for s in common]), np.array([b[s] for s in common])
        d = x - y
        sd = float(np.std(d, ddof=1))
        rho = float(np.corrcoef(x, y)[0, 1])
        indep = math.sqrt(float(np.var(x, ddof=1) + np.var(y, ddof=1)))
        sd_pooled, sd_df = sd_pooled + (len(d) - 1) * sd**2, sd_df + len(d) - 1
        print(f"{claim.id:18s} {len(d):5d} {d.mean():+6.2f} {sd:6.2f} {rho:+8.2f}        {indep:6.2f}")
    if sd_df:
        print(f"pooled σ_d over these claims = {math.sqrt(sd_pooled / sd_df):.2f} ({sd_df} df; claims share rows)")


if __name__ == "__main__":
    main()
