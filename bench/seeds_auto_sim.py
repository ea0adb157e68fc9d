"""Figures for docs/verdicts.md: --seeds auto against uniform seeds at the paper's truth (Table 2), and the
false-verdict rates of the robust-verdict scenarios. Reuses the test generators (tests/simworld.py):

    .venv/bin/python bench/seeds_auto_sim.py --sims 40 --rho 0.5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ifbf.orchestrate import adaptive, design  # noqa: E402
from test_seeds_auto_cost import RESAMPLES, simulate, summarise  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=40)
    parser.add_argument("--rho", type=float, default=0.5)
    parser.add_argument("--uniform", type=int, nargs="+", default=[4, 8, 12, 16, 24, 32, 48])
    args = parser.parse_args()
    adaptive.RESAMPLES, design.IMAGE_RESAMPLES = RESAMPLES, 100
    start = time.perf_counter()
    runs = [simulate(sim, args.rho, args.uniform) for sim in range(args.sims)]
    s = summarise(runs, args.uniform)
    print(f"{args.sims} simulations at rho = {args.rho} ({(time.perf_counter() - start) / 60:.1f} min)")
    print("procedure        trainings  resolved after Holm  runs with a false verdict")
    for key, (trainings, resolved) in s["mean"].items():
        name = "--seeds auto" if key == "auto" else f"uniform {key}"
        print(f"{name:16s} {trainings:9.1f}  {resolved:19.2f}  {s['false'][key]:.3f}")
    match = s["match"]
    if match is not None:
        ratio = s["mean"]["auto"][0] / s["mean"][match][0]
        print(f"smallest uniform count resolving as many: {match} seeds per row; auto spends {ratio:.2f} x its trainings")


if __name__ == "__main__":
    main()
