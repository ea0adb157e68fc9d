"""A generator of known truth for the verdict simulations (tests/test_verdict_robust.py, test_seeds_auto_cost.py,
bench/seeds_auto_sim.py): fixed evaluation images, rows that are mIoU shifts, seeds that share their effects.

60 images x 19 classes; each image has its own difficulty per class, shared by every row (so a difference is
paired on the images), and each evaluation adds its own per-image noise. A row is a shift of the mIoU (points);
seed s moves row r by e_r,s = σ_r (sqrt(ρ) z_s + sqrt(1 − ρ) u_r,s): z_s shared by every row trained with seed s
(same data order), u_r,s its own. Qualities stay inside (0, 1), so a shift of x points moves the expected mIoU
by exactly x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ifbf.report.stats import Counts

IMAGES, CLASSES = 60, 19


class World:
    """Fixed evaluation images and the rows' seed effects (``effects``), drawn from one generator."""

    def __init__(self, rng: np.random.Generator, noise: float = 0.02) -> None:
        self.rng, self.noise = rng, noise  # noise: std of each evaluation's own per-image quality error
        self.union = rng.integers(100, 800, size=(IMAGES, CLASSES))
        self.base = 0.35 + 0.4 * rng.beta(2, 2, size=(IMAGES, CLASSES))

    def effects(self, sigmas: dict[str, float], seeds: int, rho: float) -> dict[str, np.ndarray]:
        shared = self.rng.standard_normal(seeds)
        return {r: s * (math.sqrt(rho) * shared + math.sqrt(1 - rho) * self.rng.standard_normal(seeds))
                for r, s in sigmas.items()}

    def evaluation(self, shift: float, effect: float, seed: int) -> Counts:
        """One seed's evaluation: quality = image difficulty + (shift + seed effect) / 100 + its own noise."""
        quality = self.base + (shift + effect) / 100 + self.rng.normal(0, self.noise, size=self.base.shape)
        inter = self.rng.binomial(self.union, np.clip(quality, 0.0, 1.0))
        return Counts({"inter": inter, "union": self.union}, seed=seed)

    def row(self, shift: float, effects: np.ndarray) -> list[Counts]:
        return [self.evaluation(shift, e, s) for s, e in enumerate(effects)]


@dataclass
class Table:
    """Rows of one table at known mIoU (``truth``), σ per row and ρ between seeds; seeds drawn on demand and
    kept, so seed s of a row is the same evaluation whoever asks (uniform seeds and --seeds auto share them)."""

    world: World
    truth: dict[str, float]
    sigma: float
    rho: float
    drawn: dict[str, list[Counts]] = field(default_factory=dict)
    shared: list[float] = field(default_factory=list)
    own: dict[str, list[float]] = field(default_factory=dict)

    def rows(self, seeds: dict[str, int]) -> dict[str, list[Counts]]:
        rng = self.world.rng
        while len(self.shared) < max(seeds.values()):
            self.shared.append(float(rng.standard_normal()))
        out = {}
        for name, n in seeds.items():
            have = self.drawn.setdefault(name, [])
            while len(have) < n:
                s = len(have)
                effect = self.sigma * (math.sqrt(self.rho) * self.shared[s] +
                                       math.sqrt(1 - self.rho) * float(rng.standard_normal()))
                have.append(self.world.evaluation(self.truth[name], effect, s))
            out[name] = have[:n]
        return out
