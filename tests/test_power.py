"""The seeds-for-power formula against a direct simulation of a paired normal Δ."""

import numpy as np
import pytest

from ifbf.report.power import IMAGE_NOISE, NO_EFFECT, OVER_LIMIT, seeds_for_power, z_total
from ifbf.report.stats import SeedNoise, critical_value, posterior


def simulated_power(size: float, image_se: float, diff_std: float, seeds: int, prior_df: float, alpha: float,
                    rng: np.random.Generator, sims: int = 20_000) -> float:
    """The report's own test on simulated data: S paired per-seed differences d_s ~ N(size, σ_d²) plus the image
    noise of their mean, σ_d from the d_s with the prior at the truth (``posterior``), Cochran–Cox interval."""
    d = size + diff_std * rng.standard_normal((sims, seeds)) + image_se * rng.standard_normal((sims, 1))
    prior = SeedNoise(diff_std, prior_df)
    hits = 0
    for row in d:
        sigma = posterior(prior, list(row), diff_std)
        seed_var = sigma.std**2 / seeds
        q = critical_value(image_se**2, seed_var, sigma.df, 1 - alpha)
        hits += abs(row.mean()) > q * np.sqrt(image_se**2 + seed_var)
    return hits / sims


@pytest.mark.parametrize("prior_df, alpha", [(2, 0.05), (20, 0.05 / 14)])
def test_power_at_the_returned_seeds_is_at_least_80_percent_and_not_one_seed_less(prior_df, alpha) -> None:
    rng = np.random.default_rng(0)
    size, image_se, diff_std = 1.0, 0.2, 0.8
    needed = seeds_for_power(size, image_se, diff_std, alpha, prior_df=prior_df).seeds
    assert needed is not None and needed > 1
    assert simulated_power(size, image_se, diff_std, needed, prior_df, alpha, rng, 4000) >= 0.77
    assert simulated_power(size, image_se, diff_std, needed - 1, prior_df, alpha, rng, 4000) < 0.80


def test_reasons() -> None:
    assert seeds_for_power(0.1, image_se=0.5, diff_std=1.0).reason == IMAGE_NOISE
    assert seeds_for_power(0.05, image_se=0.01, diff_std=2.0).reason == OVER_LIMIT
    assert seeds_for_power(None, 0.1, 1.0).reason == NO_EFFECT
    assert seeds_for_power(3.0, 0.1, 0.0).seeds == 1
    assert z_total(0.05) > z_total(0.10)
