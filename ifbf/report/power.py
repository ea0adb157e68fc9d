"""How many seeds per row a paired difference Δ of two rows needs before its interval can exclude 0.

The noise of Δ has two sources: the evaluation images (``image_se``: the bootstrap std of Δ with the seeds
held fixed; it does not shrink with more seeds) and training (``diff_std``: σ_d, the std of the per-seed
difference d_s = m_A,s − m_B,s of the two rows trained with the same seed s; it shrinks as 1/sqrt(S)).
The report tests Δ with the critical value q of ``stats.critical_value`` (Cochran–Cox) at the degrees of
freedom σ_d will have with S seeds (the prior's, capped as ``stats.posterior`` caps them, plus S − 1), so a
two-sided test at ``alpha`` has power ``power`` against a true Δ = ``size`` when
|size| ≥ (q_{1−alpha/2} + q_{power}) · se(Δ) at those df (the t-approximation of the noncentral t).
Used by the claims (seeds for the paper's effect) and by ``reproduce.py --design``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from ifbf.report.seednoise import PRIOR_DF_CAP, critical_value

POWER = 0.8
SEED_LIMIT = 1000  # beyond this many seeds per row a claim counts as not resolvable

IMAGE_NOISE = "image noise alone exceeds the effect"
OVER_LIMIT = f"> {SEED_LIMIT} seeds"
NO_EFFECT = "no effect to detect (size 0 or unknown)"
NEVER_PREDICTED = "the class is never predicted by either row"


def delta_se(image_se: float, seed_std: float, seeds_a: int, seeds_b: int) -> float:
    """Standard error of a paired Δ of two rows with ``seeds_a`` and ``seeds_b`` seeds."""
    return math.sqrt(image_se**2 + seed_std**2 * (1 / seeds_a + 1 / seeds_b))


def z_total(alpha: float, power: float = POWER) -> float:
    """z_{1−alpha/2} + z_{power}: how many standard errors a detectable effect must span."""
    normal = NormalDist()
    return normal.inv_cdf(1 - alpha / 2) + normal.inv_cdf(power)


@dataclass(frozen=True)
class SeedsNeeded:
    """Seeds per row (both rows of Δ get as many) for ``power`` against an effect; ``seeds`` None with a
    ``reason`` when no number of seeds (up to SEED_LIMIT) does."""

    seeds: int | None
    reason: str = ""

    def text(self) -> str:
        return f"{self.seeds} seed{'s' if self.seeds != 1 else ''} per row" if self.seeds is not None else self.reason


def df_at(seeds: int, prior_df: float) -> float:
    """Degrees of freedom of σ_d with ``seeds`` paired seeds: the prior's (at most max(2, S − 1)) plus S − 1."""
    return min(prior_df, float(max(PRIOR_DF_CAP, seeds - 1))) + seeds - 1


def detectable(seeds: int, image_se: float, diff_std: float, alpha: float, power: float, prior_df: float) -> float:
    """The smallest |Δ| the report's test finds with probability ``power`` at ``seeds`` paired seeds."""
    image_var, seed_var = image_se**2, diff_std**2 / seeds
    df = df_at(seeds, prior_df)
    q = critical_value(image_var, seed_var, df, 1 - alpha) + critical_value(image_var, seed_var, df, 2 * power - 1)
    return q * math.sqrt(image_var + seed_var)


def seeds_for_power(size: float | None, image_se: float, diff_std: float, alpha: float = 0.05,
                    power: float = POWER, limit: int = SEED_LIMIT, prior_df: float = math.inf) -> SeedsNeeded:
    """Smallest S (paired seeds per row) with |size| ≥ ``detectable(S)``; ``prior_df``: the df of the prior
    the report will combine the S seeds with."""
    if size is None or size == 0 or not math.isfinite(size):
        return SeedsNeeded(None, NO_EFFECT)
    if abs(size) <= z_total(alpha, power) * image_se:
        return SeedsNeeded(None, IMAGE_NOISE)
    if diff_std == 0:
        return SeedsNeeded(1)

    def enough(seeds: int) -> bool:
        return abs(size) >= detectable(seeds, image_se, diff_std, alpha, power, prior_df)

    high = 1
    while not enough(high):
        if high >= limit:
            return SeedsNeeded(None, OVER_LIMIT)
        high = min(limit, 2 * high)
    low = high // 2  # enough(high); not enough(low) unless low == 0
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return SeedsNeeded(high)
