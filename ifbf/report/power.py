"""How many seeds per row a paired difference Δ of two rows needs before its interval can exclude 0.

The noise of a row's mIoU has two sources: the evaluation images (``image_se``: the bootstrap std of Δ
with the seeds held fixed; it does not shrink with more seeds) and training (``seed_std``: the std of one
row's mIoU between seeds on fixed images; it shrinks as 1/sqrt(seeds)). Two rows train independently, so
the seed part of Var(Δ) is seed_std² (1/S_a + 1/S_b). A two-sided test at ``alpha`` has power ``power``
against a true Δ = ``size`` when |size| ≥ (z_{1−alpha/2} + z_{power}) · se(Δ) (normal approximation).
Used by the claims (seeds for the paper's effect) and by ``reproduce.py --design``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

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


def seeds_for_power(size: float | None, image_se: float, seed_std: float, alpha: float = 0.05,
                    power: float = POWER, limit: int = SEED_LIMIT) -> SeedsNeeded:
    """Smallest S with |size| ≥ z_total · delta_se(image_se, seed_std, S, S)."""
    if size is None or size == 0 or not math.isfinite(size):
        return SeedsNeeded(None, NO_EFFECT)
    room = (abs(size) / z_total(alpha, power)) ** 2 - image_se**2
    if room <= 0:
        return SeedsNeeded(None, IMAGE_NOISE)
    if seed_std == 0:
        return SeedsNeeded(1)
    needed = max(1, math.ceil(2 * seed_std**2 / room))
    return SeedsNeeded(needed) if needed <= limit else SeedsNeeded(None, OVER_LIMIT)
