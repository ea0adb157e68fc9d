"""Bootstrap intervals from per-image counts: the metric's own mIoU, coverage on simulated data with a
known truth, paired differences, the best of a sweep and the seeds-needed estimate."""

from __future__ import annotations

import numpy as np
import pytest

from ifbf.errors import IfbfError
from ifbf.engine.metrics import iou_from_train_confusion, summary
from ifbf.report.stats import (Counts, Difference, best_probability, miou, miou_interval, paired_difference, row_miou,
                        seeds_needed)

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


TRUE_MIOU = 100 * float(np.mean(np.linspace(2, 9, K) / (np.linspace(2, 9, K) + 3.0)))


def sample(rng: np.random.Generator, p: np.ndarray, union: np.ndarray, shift: float = 0.0) -> Counts:
    return Counts(rng.binomial(union, np.clip(p + shift, 0, 1)), union)


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
        interval = miou_interval([counts], resamples=1000, seed=sim)
        assert interval.low <= interval.estimate <= interval.high
        covered.append(interval.low <= TRUE_MIOU <= interval.high)
    print(f"coverage {np.mean(covered):.3f}")
    assert 0.90 <= np.mean(covered) <= 0.99


def test_paired_difference_of_one_distribution_contains_zero_about_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    contains = []
    for sim in range(200):
        p, union = population(rng, 100)
        diff = paired_difference([sample(rng, p, union)], [sample(rng, p, union)], resamples=1000, seed=sim)
        contains.append(diff.low <= 0 <= diff.high)
        assert 0 <= diff.p_le_zero <= 1
    print(f"contains 0: {np.mean(contains):.3f}")
    assert 0.90 <= np.mean(contains) <= 0.99


def test_pairing_on_images_resolves_what_separate_intervals_cannot():
    rng = np.random.default_rng(4)
    p, union = population(rng, 100)
    a, b = sample(rng, p, union, shift=0.006), sample(rng, p, union)
    ia, ib = miou_interval([a], resamples=2000), miou_interval([b], resamples=2000)
    assert ia.low < ib.high  # the two intervals overlap ...
    diff = paired_difference([a], [b], resamples=2000)
    assert diff.low > 0 and diff.p_le_zero < 0.025  # ... but the paired Δ excludes 0
    assert diff.estimate == pytest.approx(row_miou([a]) - row_miou([b]))
    assert diff.low < 0.6 < diff.high  # the true shift is 0.6 points


def test_seeds_widen_the_interval_and_give_their_std():
    rng = np.random.default_rng(5)
    p, union = population(rng, 300)
    seeds = [sample(rng, p, union, shift=s) for s in (-0.03, 0.0, 0.03)]
    per_seed = [row_miou([c]) for c in seeds]
    one, three = miou_interval(seeds[1:2], resamples=2000), miou_interval(seeds, resamples=2000)
    assert three.seed_std == pytest.approx(np.std(per_seed, ddof=1)) and one.seed_std is None
    assert three.estimate == pytest.approx(np.mean(per_seed))
    assert three.high - three.low > 2 * (one.high - one.low)


def test_best_probability_finds_a_clear_winner_and_splits_a_tie():
    rng = np.random.default_rng(6)
    p, union = population(rng, 150)
    rows = {"low": [sample(rng, p, union, -0.03)], "best": [sample(rng, p, union, 0.03)],
            "mid": [sample(rng, p, union)]}
    prob = best_probability(rows, resamples=2000)
    assert sum(prob.values()) == pytest.approx(1) and prob["best"] > 0.99
    same = sample(rng, p, union)
    tie = best_probability({"x": [same], "y": [Counts(same.inter.copy(), same.union.copy())]}, resamples=500)
    assert tie == {"x": 1.0, "y": 0.0}  # equal everywhere: the first row wins each resample (argmax)


def test_rows_on_different_images_are_refused():
    rng = np.random.default_rng(7)
    p, union = population(rng, 20)
    a = sample(rng, p, union)
    with pytest.raises(IfbfError, match="same images"):
        paired_difference([a], [Counts(a.inter[:10], a.union[:10])])
    named = Counts(a.inter, a.union, tuple(f"img{i}" for i in range(20)))
    renamed = Counts(a.inter, a.union, tuple(f"other{i}" for i in range(20)))
    with pytest.raises(IfbfError, match="same images"):
        paired_difference([named], [renamed])


def test_seeds_needed_by_hand():
    diff = Difference(estimate=1.0, low=-0.5, high=2.5, p_le_zero=0.1, se=0.8, image_se=0.2, seed_var=1.5,
                      n_seeds=(3, 3))
    # 1 = 2.8 sqrt(1.5 / S + 0.04)  ->  S = 1.5 / (1 / 2.8**2 - 0.04) = 17.2
    assert seeds_needed(diff) == 18
    assert seeds_needed(Difference(**{**diff.__dict__, "image_se": 0.5})) is None  # images alone too noisy
    one_seed = Difference(**{**diff.__dict__, "seed_var": None})
    assert seeds_needed(one_seed, assumed_seed_std=0.5) == 6  # seed_var = 2 * 0.25 -> 0.5 / 0.0876 = 5.7


def test_hierarchical_interval_covers_the_mean_over_seeds():
    """Three seeds, each moving every class by N(0, 1 point): the truth is the mean over seeds."""
    rng = np.random.default_rng(8)
    covered = []
    for sim in range(200):
        p, union = population(rng, 100)
        row = [sample(rng, p, union, shift=rng.normal(0, 0.01)) for _ in range(3)]
        interval = miou_interval(row, resamples=500, seed=sim)
        covered.append(interval.low <= TRUE_MIOU <= interval.high)
    print(f"coverage with 3 seeds {np.mean(covered):.3f}")
    assert 0.88 <= np.mean(covered) <= 0.99
