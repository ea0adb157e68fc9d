"""The training noise of one row or one paired Δ between seeds (σ, σ_d) and the critical values and p-values
of an interval that holds it beside the image noise (``ifbf.report.stats``; docs/verdicts.md).

A :class:`SeedNoise` is a prior (the preset's ``report.seed_std`` with its degrees of freedom, or what a
report measured) or, after ``posterior``, the σ a row or claim uses: its own seeds combined with the prior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ifbf.experiments import ReportPrior
from ifbf.report.student import t_quantile, two_sided_p

LEVEL = 0.95


@dataclass(frozen=True)
class SeedNoise:
    """σ, the std of one training's value (mIoU or a class IoU, points) between seeds on fixed images, and
    where it comes from: ``measured`` on the report's multi-seed rows (pooled, ``df`` degrees of freedom)
    or a prior (``df``: how well it is known; ``posterior`` lends at most max(2, k − 1) of them). ``std`` None: unknown,
    no honest interval exists."""

    std: float | None
    df: float = math.inf
    source: str = "assumed"
    rows: int = 0  # rows pooled into a measured σ
    diff: float | None = None  # prior σ_d of a paired Δ of two rows; None: sqrt(2) std (ρ = 0 assumed)
    own_df: int = 0  # degrees of freedom from the row's or claim's own seeds (0: the prior alone)
    prior_df: float | None = None  # after ``posterior``: the df the prior itself states (before the cap)

    @classmethod
    def prior_of(cls, report: ReportPrior) -> SeedNoise:
        """A preset's prior (its ``report:`` section): σ, its df and source, and σ_d where it states one."""
        return cls(report.seed_std, report.seed_std_df, report.seed_std_source, diff=report.seed_diff_std)

    @property
    def measured(self) -> bool:
        """Pooled from this report's own multi-seed rows (not a preset's prior)."""
        return self.rows > 0

    @property
    def on_prior(self) -> bool:
        """Rests on the prior alone: the row or claim has no seeds of its own to check it."""
        return self.std is not None and self.own_df == 0

    def text(self) -> str:
        if self.std is None:
            return "unknown (1 seed, no prior)"
        if self.own_df:
            return f"{self.std:.2f} own {self.own_df} df + prior (df {self.df - self.own_df:g})"
        if self.measured:
            return f"{self.std:.2f} measured (df {self.df:g}, {self.rows} rows)"
        return f"{self.std:.2f} prior" + (f" (df {self.df:g})" if math.isfinite(self.df) else "")

    def diff_std(self, sides: tuple[int, int] = (1, 1)) -> float | None:
        """Prior σ of the per-seed Δ of the means of two row sets of ``sides`` rows: σ_d (or sqrt(2) σ, the
        rows' seed effects taken as uncorrelated, an upper bound for ρ ≥ 0) scaled to the sets."""
        if self.std is None:
            return None
        pair = self.diff if self.diff is not None else math.sqrt(2) * self.std
        return pair * math.sqrt((1 / sides[0] + 1 / sides[1]) / 2)

    def one_class(self, classes: int) -> SeedNoise:
        """A prior for one class's IoU from the mIoU prior: mIoU is the mean of ``classes`` IoUs, so a class
        varies sqrt(classes) times as much when the classes move independently (less when they move
        together: an upper bound for non-negative correlations)."""
        if self.std is None:
            return self
        diff = None if self.diff is None else self.diff * math.sqrt(classes)
        return replace(self, std=self.std * math.sqrt(classes), diff=diff,
                       source=f"{self.source}; sqrt({classes}) x the mIoU value for one class")


PRIOR_DF_CAP = 2  # the most degrees of freedom a prior lends where the claim's own seeds give fewer


def posterior(prior: SeedNoise, values: Sequence[float], prior_std: float | None = None) -> SeedNoise:
    """σ of one row or paired Δ from its own per-seed ``values`` (df k − 1) and the prior (std ``prior_std``,
    else ``prior.std``), which counts for min(prior.df, max(PRIOR_DF_CAP, k − 1)) degrees of freedom: a
    scaled inverse-χ² update, σ² = (ν₀ s₀² + (k − 1) s²) / (ν₀ + k − 1) with df ν₀ + k − 1."""
    own = max(0, len(values) - 1)
    own_var = float(np.var(np.asarray(values, dtype=np.float64), ddof=1)) if own > 0 else 0.0
    s0 = prior.std if prior_std is None else prior_std
    if s0 is None:  # no prior: the own seeds alone, or nothing
        if own <= 0:
            return SeedNoise(None, source=prior.source)
        return SeedNoise(math.sqrt(own_var), float(own), f"own {own + 1} seeds", own_df=own)
    nu = min(prior.df, float(max(PRIOR_DF_CAP, own)))
    df = nu + own
    variance = (nu * s0**2 + own * own_var) / df
    source = prior.source if own <= 0 else f"own {own + 1} seeds with the prior ({prior.source})"
    return SeedNoise(math.sqrt(variance), df, source, prior.rows, prior.diff, own, prior.df)


def pooled_noise(groups: Sequence[Sequence[float]], prior: float | None, source: str = "assumed",
                 prior_df: float = math.inf) -> SeedNoise:
    """σ from the per-seed values of each row (``groups``): the pooled within-row variance over the rows
    with at least 2 seeds, df = Σ (S_i − 1); without such rows, the prior (``None``: unknown) with its df
    (``posterior`` lends at most max(2, k − 1) of them to a claim with k seeds)."""
    multi = [np.asarray(g, dtype=np.float64) for g in groups if len(g) >= 2]
    if not multi:
        return SeedNoise(prior, prior_df, source)
    df = sum(len(g) - 1 for g in multi)
    variance = sum(float(np.var(g, ddof=1)) * (len(g) - 1) for g in multi) / df
    return SeedNoise(math.sqrt(variance), float(df), "measured", len(multi))


def critical_value(image_var: float, seed_var: float, seed_df: float, level: float = LEVEL) -> float:
    """The multiple q of se for a ``level`` interval of a value with a known-df image part and a seed part
    estimated with ``seed_df`` degrees of freedom: Cochran–Cox, the variance-weighted mean of the normal and
    the t_df quantiles. Welch–Satterthwaite covers only 92% at df 2 when seeds dominate (its df grows
    exactly when σ happens to come out small); Cochran–Cox stays within 95–97% (docs/verdicts.md)."""
    z = t_quantile((1 + level) / 2, math.inf)
    total = image_var + seed_var
    if total == 0 or seed_var == 0 or math.isinf(seed_df):
        return z
    return (image_var * z + seed_var * t_quantile((1 + level) / 2, seed_df)) / total


def t_interval(estimate: float, image_var: float, seed_var: float, seed_df: float,
               level: float = LEVEL) -> tuple[float, float, float]:
    """(low, high, se): estimate ± q · se with se² = image_var + seed_var and q = ``critical_value``."""
    se = math.sqrt(image_var + seed_var)
    q = critical_value(image_var, seed_var, seed_df, level)
    return estimate - q * se, estimate + q * se, se


def p_value(estimate: float, null: float, image_var: float, seed_var: float, seed_df: float) -> float:
    """Two-sided p of ``estimate`` = ``null``: the 1 − level at which ``t_interval`` just reaches ``null``
    (so a 95% interval excludes the null exactly when p < 0.05)."""
    se = math.sqrt(image_var + seed_var)
    if math.isnan(estimate) or not math.isfinite(se):
        return math.nan
    if se == 0:
        return 1.0 if estimate == null else 0.0
    statistic = abs(estimate - null) / se
    if seed_var == 0 or math.isinf(seed_df):
        return two_sided_p(statistic, math.inf)
    floor = -33.0  # p = 4.7e-15: its level 1 − p (and the quantile's (1 + level) / 2) stays safely below 1.0
    if critical_value(image_var, seed_var, seed_df, 1 - math.exp(floor)) <= statistic:
        return math.exp(floor)  # smaller than quantiles can resolve; REPORT.md shows "< 0.001"
    low, high = floor, 0.0  # bisection on log p: q(1 − p) falls as p grows
    for _ in range(60):
        mid = (low + high) / 2
        if critical_value(image_var, seed_var, seed_df, 1 - math.exp(mid)) > statistic:
            low = mid
        else:
            high = mid
    return math.exp(high)
