"""--seeds auto at the paper's truth (Table 2 as the paper reports it, σ = 1 per row, seeds shared across rows):
how many trainings it spends against the uniform seed count that resolves as many claims, and its false
verdicts after Holm. Each simulation draws one world (tests/simworld.py); --seeds auto's looks and every
uniform seed count read the same seeds (seed s of a row is one evaluation), and each ends in the report's own
verdicts (``judge_all`` at 95 %, Holm across the claims). Figures for docs/verdicts.md: bench/seeds_auto_sim.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from ifbf.experiments import load_preset, load_table
from ifbf.orchestrate import adaptive, design
from ifbf.orchestrate.adaptive import Observation, looks
from ifbf.orchestrate.design import measure_noise, table_claims
from ifbf.report.claims import load_claims
from ifbf.report.records import larger_prior
from ifbf.report.stats import SeedNoise, per_seed, pooled_noise
from ifbf.report.verdicts import CONTRADICTED, RESOLVED, adjust, judge_all
from simworld import Table, World

TABLE2 = load_table(2)
PAPER = load_preset("paper")
RESAMPLES = 200
IMAGE_NOISE = 0.04  # each evaluation's own per-image error: a paired Δ's image se about 0.25, as on Cityscapes val


def truth() -> dict[str, float]:
    """Each row's mIoU shift: the paper's Table 2 value, around 75 (a row the paper does not give: none)."""
    return {r.name: r.paper.get("miou", 75.0) - 75.0 for r in TABLE2.runnable()}


def report(rows: dict[str, list]) -> tuple[int, int]:
    """(claims resolved after Holm, of them contradicted: all of Table 2's effects are truly positive)."""
    prior = SeedNoise(PAPER.report.seed_std, PAPER.report.seed_std_df, "paper")
    prior = larger_prior(prior, pooled_noise([per_seed(r) for r in rows.values()], None))
    verdicts = adjust(judge_all(load_claims(2), {n: r for n, r in rows.items()}, lambda m: prior if m == "miou"
                                else prior.one_class(19), PAPER.report.margin, RESAMPLES))
    counted = [v for v in verdicts if v.counted]
    resolved = [v for v in counted if v.adjusted in RESOLVED]
    return len(resolved), sum(v.adjusted == CONTRADICTED for v in resolved)


def simulate(sim: int, rho: float, uniform: Sequence[int], budget: float = math.inf) -> dict:
    """One world: --seeds auto (``budget`` trainings: one device-hour each) and each uniform seed count."""
    table = Table(World(np.random.default_rng([sim, int(10 * rho)]), IMAGE_NOISE), truth(), 1.0, rho)

    def observe(seeds):
        rows = table.rows({r: n for (_, r), n in seeds.items()})
        noise = measure_noise({2: rows}, [TABLE2], PAPER, 60)
        return Observation({2: rows}, noise, {(2, r.name): 1.0 for r in TABLE2.runnable()})

    history = looks(table_claims([TABLE2]), PAPER.report, budget, observe)
    final = history[-1].seeds
    out = {"auto": (sum(final.values()), *report(table.rows({r: n for (_, r), n in final.items()})))}
    for s in uniform:
        out[s] = (s * len(final), *report(table.rows({r.name: s for r in TABLE2.runnable()})))
    return out


def summarise(runs: list[dict], uniform: Sequence[int]) -> dict:
    """Mean trainings and claims resolved of --seeds auto and of each uniform count; the smallest uniform count
    resolving as many; false-verdict rates (runs with any contradicted claim after Holm)."""
    mean = {k: tuple(float(np.mean([r[k][i] for r in runs])) for i in range(2)) for k in ("auto", *uniform)}
    match = next((s for s in uniform if mean[s][1] >= mean["auto"][1]), None)
    false = {k: float(np.mean([r[k][2] > 0 for r in runs])) for k in ("auto", *uniform)}
    return {"mean": mean, "match": match, "false": false}


@pytest.fixture(scope="module")
def paper_truth_runs() -> tuple[list[dict], tuple[int, ...]]:
    uniform = (6, 8, 10, 12, 16)
    saved = adaptive.RESAMPLES, design.IMAGE_RESAMPLES
    adaptive.RESAMPLES, design.IMAGE_RESAMPLES = RESAMPLES, 100  # a fast bootstrap; restored below
    try:
        return [simulate(sim, 0.0, uniform) for sim in range(6)], uniform
    finally:
        adaptive.RESAMPLES, design.IMAGE_RESAMPLES = saved


def test_seeds_auto_at_the_papers_truth_gives_no_false_verdict_and_resolves_what_uniform_seeds_do(paper_truth_runs):
    runs, uniform = paper_truth_runs
    s = summarise(runs, uniform)
    assert s["false"]["auto"] <= 0.05 and all(s["false"][u] <= 0.05 for u in uniform)
    assert s["match"] is not None and s["mean"]["auto"][1] >= 9  # of the 13 claims any budget resolves


@pytest.mark.xfail(strict=True, reason="issue 24's target (auto at <= 0.6 x the trainings of the uniform seeds "
                   "resolving as many claims) is not met: 1.31 x measured (bench/seeds_auto_sim.py); the cheapest fixed "
                   "allocation, knowing the truth, is 0.90-1.00 x (bench/seeds_oracle.py; docs/verdicts.md)")
def test_seeds_auto_costs_at_most_six_tenths_of_uniform_seeds(paper_truth_runs):
    runs, uniform = paper_truth_runs
    s = summarise(runs, uniform)
    assert s["mean"]["auto"][0] <= 0.6 * s["mean"][s["match"]][0], s["mean"]
