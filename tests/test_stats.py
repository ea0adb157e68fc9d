"""Intervals from per-image counts and training noise: the metric's own mIoU, the interval against a
plain computation, coverage on simulated data with a known truth, paired differences, the pooled seed std,
the t distribution and the p-values (the full coverage grid: tests/test_verdict_sim.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ifbf.errors import IfbfError
from ifbf.engine.metrics import iou_from_train_confusion, summary
from ifbf.report.stats import (Counts, SeedNoise, critical_value, image_weights, miou, row_interval,
                               paired_difference, p_value, pooled_noise, row_score)
from ifbf.report.student import t_cdf, t_quantile

K = 19


def population(rng: np.random.Generator, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Images with their own class sizes (one class often absent) and difficulties; the true IoU of
    class c is a_c / (a_c + b_c) (inter is binomial in the union: the summed ratio is unbiased)."""
    scale = rng.gamma(2.0, 0.5, size=(n, 1))
    union = rng.poisson(400 * scale * np.linspace(0.2, 3, K))
    union[:, 7] *= rng.random(n) < 0.3  # a rare class
    a, b = np.linspace(2, 9, K), np.full(K, 3.0)
    p = rng.beta(a, b, size=(n, K))
    return p, union


IMAGES_ONLY = SeedNoise(0.0, source="images only")
TRUE_MIOU = 100 * float(np.mean(np.linspace(2, 9, K) / (np.linspace(2, 9, K) + 3.0)))


def sample(rng: np.random.Generator, p: np.ndarray, union: np.ndarray, shift: float = 0.0) -> Counts:
    return Counts.of(rng.binomial(union, np.clip(p + shift, 0, 1)), union)


def test_miou_is_the_metric_on_summed_counts():
    rng = np.random.default_rng(1)
    conf = rng.integers(0, 50, size=(K, K))
    conf[3, :] = conf[:, 3] = 0  # a class that never occurs: left out of the mean
    tp = np.diag(conf)
    expected = 100 * summary(iou_from_train_confusion(conf))["miou"]
    assert miou(tp, conf.sum(0) + conf.sum(1) - tp) == pytest.approx(expected)


def test_interval_covers_the_true_miou_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    covered = []
    for sim in range(200):
        counts = sample(rng, *population(rng, 100))
        interval = row_interval([counts], IMAGES_ONLY, resamples=1000, seed=sim)
        assert interval.low <= interval.estimate <= interval.high
        covered.append(interval.low <= TRUE_MIOU <= interval.high)
    print(f"coverage {np.mean(covered):.3f}")
    assert 0.90 <= np.mean(covered) <= 0.99


def test_paired_difference_of_one_distribution_contains_zero_about_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    contains = []
    for sim in range(200):
        p, union = population(rng, 100)
        diff = paired_difference([sample(rng, p, union)], [sample(rng, p, union)], IMAGES_ONLY, resamples=1000,
                                 seed=sim)
        contains.append(diff.low <= 0 <= diff.high)
        assert 0 <= diff.p <= 1 and (diff.p < 0.05) == (not diff.low <= 0 <= diff.high)
    print(f"contains 0: {np.mean(contains):.3f}")
    assert 0.90 <= np.mean(contains) <= 0.99


def test_pairing_on_images_resolves_what_separate_intervals_cannot():
    rng = np.random.default_rng(4)
    p, union = population(rng, 100)
    a, b = sample(rng, p, union, shift=0.006), sample(rng, p, union)
    ia, ib = row_interval([a], IMAGES_ONLY, resamples=2000), row_interval([b], IMAGES_ONLY, resamples=2000)
    assert ia.low < ib.high  # the two intervals overlap ...
    diff = paired_difference([a], [b], IMAGES_ONLY, resamples=2000)
    assert diff.low > 0 and diff.p < 0.05  # ... but the paired Δ excludes 0
    assert diff.estimate == pytest.approx(row_score([a]) - row_score([b]))
    assert diff.low < 0.6 < diff.high  # the true shift is 0.6 points


def test_interval_is_the_estimate_plus_minus_q_times_images_and_seeds():
    """Against a plain computation: bootstrap variance of the seed-mean mIoU over the same image draws, plus
    σ² / S, times the Cochran–Cox critical value (normal and t_df quantiles weighted by the two parts)."""
    rng = np.random.default_rng(5)
    p, union = population(rng, 300)
    seeds = [sample(rng, p, union, shift=s) for s in (-0.03, 0.0, 0.03)]
    per_seed = [row_score([c]) for c in seeds]
    noise = SeedNoise(2.0, df=4, source="measured", rows=2)
    interval = row_interval(seeds, noise, resamples=2000)
    weights = image_weights(np.random.default_rng(0), 300, 2000)
    boot = np.mean([miou(weights @ c.inter, weights @ c.union) for c in seeds], axis=0)
    # the row's own 3 seeds (df 2) with the prior 2.0, which lends min(4, max(2, 2)) = 2 df: df 2 + 2 = 4
    sigma2 = (2 * 2.0**2 + 2 * np.var(per_seed, ddof=1)) / 4
    image_var, seed_var = float(np.var(boot)), sigma2 / 3
    q = (image_var * 1.959964 + seed_var * 2.776445) / (image_var + seed_var)  # t_4 quantile: 2.776445
    half = q * np.sqrt(image_var + seed_var)
    assert interval.estimate == pytest.approx(np.mean(per_seed))
    expected = (interval.estimate - half, interval.estimate + half)
    assert (interval.low, interval.high) == pytest.approx(expected, abs=1e-6)
    assert interval.seed_std == pytest.approx(np.std(per_seed, ddof=1))
    one = row_interval(seeds[1:2], SeedNoise(None), resamples=2000)
    assert one.seed_std is None and np.isnan(one.low) and np.isnan(one.high)  # σ unknown: no interval


def test_pooled_seed_std_by_hand():
    noise = pooled_noise([[1.0, 2.0, 3.0], [10.0, 14.0], [7.0]], prior=0.5)
    # within-row sums of squares 2 and 8 over df 2 + 1
    assert noise.std == pytest.approx(np.sqrt(10 / 3)) and noise.df == 3 and noise.rows == 2 and noise.measured
    prior = pooled_noise([[1.0], [2.0]], prior=0.5, source="assumed: a paper")
    assert prior.std == 0.5 and not prior.measured and prior.source == "assumed: a paper"
    assert pooled_noise([[1.0]], prior=None).std is None
    once = pooled_noise([[1.0]], prior=2.0, source="measured once", prior_df=3)  # a prior measured on few seeds
    assert once.df == 3 and not once.measured and once.text() == "2.00 prior (df 3)"
    assert prior.one_class(19).std == pytest.approx(0.5 * np.sqrt(19))


def test_t_distribution_against_tables_and_integration():
    for df, q in [(1, 12.706205), (2, 4.302653), (4, 2.776445), (10, 2.228139), (30, 2.042272)]:
        assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-5)
    x = np.linspace(-60, 1.3, 400_001)  # a real df, by the trapezoid rule on the density
    dens = (1 + x**2 / 2.5) ** (-1.75)
    dens /= np.trapezoid((1 + np.linspace(-2000, 2000, 2_000_001) ** 2 / 2.5) ** (-1.75),
                         np.linspace(-2000, 2000, 2_000_001))
    assert t_cdf(1.3, 2.5) == pytest.approx(np.trapezoid(dens, x), abs=2e-4)
    assert critical_value(1.0, 0.0, 2) == pytest.approx(1.959964, abs=1e-6)
    assert critical_value(0.0, 1.0, 2) == pytest.approx(4.302653, abs=1e-6)


@pytest.mark.parametrize("image_var, seed_var, df", [(0.1, 0.0, np.inf), (0.1, 0.5, 4), (0.0, 1.0, 2), (0.3, 0.3, 8)])
def test_p_value_is_where_the_interval_reaches_the_null(image_var, seed_var, df):
    se = np.sqrt(image_var + seed_var)
    for level in (0.9, 0.95, 0.99):
        estimate = critical_value(image_var, seed_var, df, level) * se  # the interval's low end is exactly 0
        assert p_value(estimate, 0.0, image_var, seed_var, df) == pytest.approx(1 - level, rel=1e-6)


@pytest.mark.parametrize("df", [70, 4, 2])
def test_p_value_of_an_overwhelming_difference_is_tiny_not_an_error(df):
    """Δ = 50 standard errors with σ measured (finite df), as 36 seeds per row of a real --seeds auto run gave:
    the bisection used to ask for a level of 1 − 4e-18 = 1.0 and stopped the report with a ValueError."""
    p = p_value(50.0, 0.0, 0.5, 0.5, df)  # se = 1: the statistic is 50
    if df == 70:
        assert 0 < p <= 5e-15  # beyond what a quantile can resolve: the floor
    else:  # few df: the t part's heavy tail reaches 50 at a p that is still resolved
        assert critical_value(0.5, 0.5, df, 1 - p) == pytest.approx(50.0, rel=1e-6)
    assert p_value(3.0, 0.0, 0.5, 0.5, df) > p  # still ordered by the statistic


def test_rows_on_different_images_are_refused():
    rng = np.random.default_rng(7)
    p, union = population(rng, 20)
    a = sample(rng, p, union)
    with pytest.raises(IfbfError, match="same images"):
        paired_difference([a], [Counts.of(a.inter[:10], a.union[:10])], IMAGES_ONLY)
    named = Counts.of(a.inter, a.union, tuple(f"img{i}" for i in range(20)))
    renamed = Counts.of(a.inter, a.union, tuple(f"other{i}" for i in range(20)))
    with pytest.raises(IfbfError, match="same images"):
        paired_difference([named], [renamed], IMAGES_ONLY)


def test_unpaired_difference_takes_each_rows_own_seeds_with_the_prior():
    """Rows with 1 and 3 seeds share one seed: no pairing. Δ's variance is the bootstrap variance of Δ plus
    σ_a² / 1 + σ_b² / 3, each σ its row's own seeds combined with the prior (2 df lent), at the smaller df."""
    rng = np.random.default_rng(8)
    p, union = population(rng, 100)
    a, b = [sample(rng, p, union)], [sample(rng, p, union, shift=s) for s in (-0.02, 0.0, 0.03)]
    images = paired_difference(a, b, IMAGES_ONLY, resamples=1000)
    both = paired_difference(a, b, SeedNoise(1.5), resamples=1000)
    assert both.paired == 0 and both.image_se == pytest.approx(images.image_se)
    var_b = (2 * 1.5**2 + 2 * np.var([row_score([c]) for c in b], ddof=1)) / 4
    seed_var = 1.5**2 + var_b / 3
    assert both.se == pytest.approx(np.sqrt(images.image_se**2 + seed_var))
    q = (images.image_se**2 * 1.959964 + seed_var * 4.302653) / (images.image_se**2 + seed_var)  # df 2 (row a)
    assert both.high - both.low == pytest.approx(2 * q * both.se, rel=1e-5)


def test_paired_seeds_take_the_std_of_the_per_seed_differences():
    """Two rows with seeds 0-3 whose seed effects are shared: the per-seed differences d_s vary far less than
    either row, and the training part of Δ is σ_d² / k, σ_d from the d_s with the prior (σ_d prior: sqrt(2) σ)."""
    rng = np.random.default_rng(9)
    p, union = population(rng, 200)
    shared = (-0.04, 0.01, 0.05, -0.02)  # each seed moves both rows alike
    a = [replace(sample(rng, p, union, shift=s), seed=i) for i, s in enumerate(shared)]
    b = [replace(sample(rng, p, union, shift=s - 0.01), seed=i) for i, s in enumerate(shared)]
    prior = SeedNoise(1.0, df=10)
    diff = paired_difference(a, b, prior, resamples=1000)
    d = np.array([row_score([x]) - row_score([y]) for x, y in zip(a, b)])
    sigma2 = (3 * 2 * 1.0**2 + 3 * np.var(d, ddof=1)) / 6
    assert diff.paired == 4 and diff.df == 6 and diff.estimate == pytest.approx(d.mean())
    assert diff.se == pytest.approx(np.sqrt(diff.image_se**2 + sigma2 / 4))
    unpaired = paired_difference(a, b, prior, resamples=1000, paired=False)
    assert np.var(d, ddof=1) < 0.2 * np.var([row_score([x]) for x in a], ddof=1)
    assert diff.high - diff.low < unpaired.high - unpaired.low  # the shared seed effects cancel
    relabelled = [replace(x, seed=s) for x, s in zip(b, (1, 0, 3, 2))]  # pairs by seed id, not by position
    mismatched = paired_difference(a, relabelled, prior, resamples=1000)
    assert mismatched.estimate == pytest.approx(d.mean()) and mismatched.se > 2 * diff.se
