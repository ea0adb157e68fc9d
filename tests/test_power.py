"""The seeds-for-power formula against a direct simulation of a paired normal Δ."""

import numpy as np

from ifbf.report.power import IMAGE_NOISE, NO_EFFECT, OVER_LIMIT, delta_se, seeds_for_power, z_total


def test_power_at_the_returned_seeds_is_at_least_80_percent_and_not_one_seed_less() -> None:
    rng = np.random.default_rng(0)
    size, image_se, seed_std = 1.0, 0.2, 0.8
    needed = seeds_for_power(size, image_se, seed_std).seeds
    assert needed is not None and needed > 1

    def power(seeds: int) -> float:  # simulate Δ estimates and test at the 5% level
        se = delta_se(image_se, seed_std, seeds, seeds)
        estimates = size + se * rng.standard_normal(200_000)
        return float(np.mean(np.abs(estimates) / se > 1.959964))

    assert power(needed) >= 0.79
    assert power(needed - 1) < 0.80


def test_reasons() -> None:
    assert seeds_for_power(0.1, image_se=0.5, seed_std=1.0).reason == IMAGE_NOISE
    assert seeds_for_power(0.05, image_se=0.01, seed_std=2.0).reason == OVER_LIMIT
    assert seeds_for_power(None, 0.1, 1.0).reason == NO_EFFECT
    assert seeds_for_power(3.0, 0.1, 0.0).seeds == 1
    assert z_total(0.05) > z_total(0.10)
