"""Verdicts where a lab really is (issue 24): σ uneven across rows, a prior that is wrong, seeds that share their
data order, the paper's Δ one draw of its own. Known truths from a generator of this file, judged by the
production code (``verdicts.judge``, ``stats.paired_difference``, ``records.larger_prior``, ``design.design``).

The generator is tests/simworld.py (rows are mIoU shifts on 60 shared images, seed effects with correlation ρ
between rows trained with the same seed). Rates are fractions of simulations; each bound below is the issue's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ifbf.experiments import load_preset, load_table
from ifbf.orchestrate.design import Noise, design
from ifbf.report.claims import load_claims, parse_claim
from ifbf.report.records import larger_prior
from ifbf.report.stats import Counts, SeedNoise, paired_difference, pooled_noise
from ifbf.report.verdicts import RESOLVED, SIZE_OFF, SUPPORTED, judge
from simworld import World

RESAMPLES = 200
TABLE2 = load_table(2)
A, B = "R50 + ASPP", "R50 BaseNet"


def delta_claim(size: float | None = None):
    return parse_claim({"id": "c", "text": "t", "kind": "delta", "rows": [A, B], "direction": "higher",
                        "size": size}, TABLE2, "test")


def pair(world: World, delta: float, sigmas: tuple[float, float], seeds: int, rho: float) -> dict[str, list[Counts]]:
    e = world.effects({A: sigmas[0], B: sigmas[1]}, seeds, rho)
    return {A: world.row(delta, e[A]), B: world.row(0.0, e[B])}


def false_rate(sims: int, seeds: int, sigma: float, prior: SeedNoise, others: float | None = None) -> float:
    """Verdicts on "A beats B" when A and B have the same truth; ``others``: four more rows at that σ with 3
    seeds each, pooled into the report's prior as ``records.seed_noise`` does (the larger one wins)."""
    rng = np.random.default_rng([seeds, int(10 * sigma)])
    world, hits = World(rng), 0
    for sim in range(sims):
        rows = pair(world, 0.0, (sigma, sigma), seeds, 0.0)
        used = prior
        if others is not None:
            groups = [list(others * rng.standard_normal(3)) for _ in range(4)]
            used = larger_prior(prior, pooled_noise(groups, None))
        v = judge(delta_claim(), rows, lambda metric: used, resamples=RESAMPLES, seed=sim)
        hits += v.verdict in RESOLVED
    return hits / sims


@pytest.mark.parametrize("seeds", [1, 3])
def test_uneven_sigma_claim_rows_noisier_than_the_rest(seeds):
    """Claim rows at σ 2 among rows at 0.5 (measured on them, 3 seeds each) and a prior of 1.0 (2 df): the pool
    never lowers the claim's σ, the claim's own seeds raise it. The old pooled σ gave 29.8 % false verdicts."""
    rate = false_rate(300, seeds, 2.0, SeedNoise(1.0, 2.0, "a prior of 1.0"), others=0.5)
    assert rate <= 0.06


def test_prior_at_half_the_truth_one_seed():
    """The paper preset's prior (σ 1.0 with its stated 2 df) when the truth is 2.0: one-seed verdicts ≤ 10 %
    false (at df ∞ they were 28–33 %)."""
    report = load_preset("paper").report
    prior = SeedNoise(report.seed_std, report.seed_std_df, report.seed_std_source)
    assert false_rate(300, 1, 2 * report.seed_std, prior) <= 0.10


def intervals(seeds: int, rho: float, sims: int, delta: float = 1.0, sigma: float = 1.0):
    """Paired and unpaired intervals of Δ = ``delta`` with a prior that is what its 2 df say: an estimate from 3
    earlier seeds (σ sqrt(χ²₂ / 2); σ_d the same with the truth's ρ, as a preset that measured it states it).
    (A prior exactly at the truth over-covers: 0.987 at 3 seeds, ρ = 0; a fixed prior is not a χ² draw.)"""
    rng = np.random.default_rng([seeds, int(10 * rho), 7])
    world = World(rng)
    out = []
    for sim in range(sims):
        s0 = sigma * math.sqrt(rng.chisquare(2) / 2)
        prior = SeedNoise(s0, 2.0, "measured on 3 seeds", diff=s0 * math.sqrt(2 * (1 - rho)))
        rows = pair(world, delta, (sigma, sigma), seeds, rho)
        out.append((paired_difference(rows[A], rows[B], prior, RESAMPLES, seed=sim),
                    paired_difference(rows[A], rows[B], prior, RESAMPLES, seed=sim, paired=False)))
    return out


@pytest.mark.parametrize("seeds, rho", [(3, 0.0), (3, 0.5), (5, 0.0), (5, 0.5)])
def test_paired_coverage(seeds, rho):
    found = intervals(seeds, rho, 300)
    covered = np.mean([d.low <= 1.0 <= d.high for d, _ in found])
    assert all(d.paired == seeds for d, _ in found)
    assert 0.93 <= covered <= 0.975, covered  # 300 simulations: binomial sd 0.013 at 0.95


@pytest.mark.parametrize("seeds", [3, 5])
def test_pairing_narrows_the_interval_when_seeds_share_their_effects(seeds):
    """With a prior whose σ_d states the seeds' correlation (a preset that measured it, as smoke does; the unpaired
    side gets sqrt(2) σ, its own form). A prior that assumes ρ = 0 gives 0.84 / 0.75 at 3 / 5 seeds
    (docs/verdicts.md): the claim's own d_s must outweigh it first."""
    found = intervals(seeds, 0.5, 200)
    paired = np.median([d.high - d.low for d, _ in found])
    unpaired = np.median([u.high - u.low for _, u in found])
    assert paired <= 0.8 * unpaired, paired / unpaired


@pytest.mark.parametrize("seeds", [1, 3, 5])
def test_size_off_counts_the_papers_own_draw(seeds):
    """The truth equals the paper's one-seed draw: the paper's Δ is one more seed pair on the same images.
    "size off" (supported but our Δ off the paper's beyond both noises) ≤ 10 %; 32–57 % before."""
    rng = np.random.default_rng([seeds, 11])
    world = World(rng)
    prior = SeedNoise(1.0, 2.0, "the truth")
    off = 0
    for sim in range(300):
        paper = pair(world, 2.0, (1.0, 1.0), 1, 0.0)
        size = float(paired_difference(paper[A], paper[B], SeedNoise(0.0), 50).estimate)
        v = judge(delta_claim(size), pair(world, 2.0, (1.0, 1.0), seeds, 0.0), lambda m: prior,
                  resamples=RESAMPLES, seed=sim)
        off += v.verdict == SIZE_OFF
    assert off / 300 <= 0.10


@pytest.mark.parametrize("claim_id", ["t2-aspp-r50", "t2-fusion-r50"])
def test_design_seeds_reach_their_power(claim_id):
    """The design's seeds for the paper's Δ (σ 1.0, ρ 0: σ_d prior sqrt(2), 2 df; the generator's image noise;
    level 0.05/14) give ≥ 0.78 power when the report's test (``judge`` at that level) is run on them."""
    claim = next(c for c in load_claims(2) if c.id == claim_id)
    rows = claim.rows[0][0], claim.rows[1][0]
    rng = np.random.default_rng([3, len(claim_id)])
    world = World(rng)
    probe = pair(world, 0.0, (0.0, 0.0), 1, 0.0)
    image_se = paired_difference(probe[A], probe[B], SeedNoise(0.0), 2000).image_se
    alpha = 0.05 / sum(c.kind != "all_of" for c in load_claims(2))
    noise = Noise(math.sqrt(2), "the truth", 2.0, {}, image_se, "the generator's")
    (planned,) = design([(claim, TABLE2)], noise, alpha)
    seeds = planned.contrasts[0][2].seeds
    assert seeds is not None and seeds > 1
    found = 0
    sims = 150
    for sim in range(sims):
        e = world.effects({rows[0]: 1.0, rows[1]: 1.0}, seeds, 0.0)
        data = {rows[0]: world.row(claim.size, e[rows[0]]), rows[1]: world.row(0.0, e[rows[1]])}
        v = judge(claim, data, lambda m: SeedNoise(1.0, 2.0), resamples=RESAMPLES, seed=sim, level=1 - alpha)
        found += v.verdict == SUPPORTED or v.verdict == SIZE_OFF
    assert found / sims >= 0.78
