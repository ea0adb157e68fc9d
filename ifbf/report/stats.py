"""Intervals of mIoU from per-image counts and the training noise of seeds: one row, a paired difference,
the classes one row wins.

Input is what every evaluation stores (``evaluations/<key>/per_image.npz``): per image and class the pixel
counts of ``rundir.PER_IMAGE_COUNTS`` (intersection and union), one :class:`Counts` per seed of a row,
scored by its metric (``rundir.SCORES``; below, mIoU). A row's estimate is the mean over its seeds of each
seed's mIoU on all images. Its variance has two parts (docs/verdicts.md):

- **images**: a bootstrap over the evaluation images with the seeds held fixed. A resample draws the
  images with replacement, sums each of their counts and recomputes the score from the sums, for mIoU
  IoU = sum(inter) / sum(union) per class (never an average of per-image IoUs; a class whose summed union
  is 0 is left out of the mean, as ``ifbf.engine.metrics.summary`` and cityscapesscripts do). Rows compared with each other share the image
  draws (paired on the images), so what the images have in common cancels in a difference.
- **training**: seed s sets ``train.seed = s`` in every row (same data order, same augmentation draws),
  so a difference is **paired on the seeds**: its training part is σ_d² / k, σ_d the std of the per-seed
  differences d_s = m_A,s − m_B,s over the k seeds both rows have (whatever correlation the shared seed
  carries is in d_s; no ρ to estimate). A row alone gets σ² / S. σ_d (or σ) is the claim's (row's) **own**
  (df k − 1) combined with a **prior** (:class:`SeedNoise`: the preset's ``report.seed_std`` or what the
  report measured, whichever is larger; ``records.seed_noise``) as a scaled inverse-χ² update
  (``posterior``): σ² = (ν₀ s₀² + (k − 1) s²) / (ν₀ + k − 1), df ν₀ + k − 1, where the prior counts for
  ν₀ = min(its df, max(PRIOR_DF_CAP, k − 1)): never for more than the claim's own seeds, nor for more than
  2 df where it has fewer, since nothing in one seed can check a prior measured elsewhere (a prior at half
  the truth then gives ≤ 10 % false one-seed verdicts; docs/verdicts.md). Rows whose seeds do not pair up
  (fewer than 2 common seeds while a row has several) fall back to the unpaired σ_A² / S_A + σ_B² / S_B.

The interval is estimate ± q · se, se² = image variance + training variance, with q between the normal
quantile (image part, infinite df) and the t quantile at σ's degrees of freedom (Cochran–Cox): with 3
seeds a normal quantile covered a paired Δ in 79% of simulations instead of 95% (issue 18;
tests/test_verdict_sim.py). Every value here is in mIoU points (%), like the paper's tables.

Vectorised: a resample is a row of a (B x n) matrix of how often each image was drawn, so the summed
counts of all resamples are one matrix product (B x n) @ (n x K).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ifbf.errors import IfbfError
from ifbf.report.seednoise import (LEVEL, SeedNoise, critical_value, p_value, pooled_noise,  # noqa: F401
                                   posterior, t_interval)
from ifbf.store.rundir import SCORES, iou

RESAMPLES = 10_000


@dataclass(frozen=True, eq=False)  # arrays: identity, not element-wise, equality
class Counts:
    """One evaluation (one seed): per image, the pixel counts of each class (``rundir.PER_IMAGE_COUNTS``: name ->
    [n_images, K] int64), scored by ``metric`` (a ``rundir.SCORES`` key: its per-class value from summed counts)."""

    arrays: Mapping[str, np.ndarray]
    names: tuple[str, ...] | None = None  # image names, checked when two rows are paired
    metric: str = "miou"
    seed: int | None = None  # the training seed (``train.seed``) it evaluates; None: its place in the row

    def __post_init__(self) -> None:
        shapes = {name: a.shape for name, a in self.arrays.items()}
        if not shapes or len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 2:
            raise IfbfError(f"per-image counts: {shapes} are not [n_images, K] arrays of one shape")
        if self.names is not None and len(self.names) != self.shape[0]:
            raise IfbfError(f"per-image counts: {len(self.names)} names for {self.shape[0]} images")
        if self.metric not in SCORES:
            raise IfbfError(f"per-image counts: no score for metric {self.metric!r} (known: {', '.join(SCORES)})")

    @classmethod
    def of(cls, inter: np.ndarray, union: np.ndarray, names: tuple[str, ...] | None = None) -> Counts:
        """The counts of an IoU evaluation from its intersections and unions."""
        return cls({"inter": inter, "union": union}, names)

    @property
    def shape(self) -> tuple[int, int]:
        """(images, classes)."""
        return next(iter(self.arrays.values())).shape

    @property
    def inter(self) -> np.ndarray:
        return self.arrays["inter"]

    @property
    def union(self) -> np.ndarray:
        return self.arrays["union"]

    def score(self, sums: Mapping[str, np.ndarray]) -> np.ndarray:
        """Per-class values (fractions, NaN: undefined) of ``metric`` from counts summed over images."""
        try:
            return SCORES[self.metric](sums)
        except KeyError as err:
            raise IfbfError(f"metric {self.metric!r} needs the per-image count {err}, which this evaluation did "
                            "not store (it ran before the count existed)") from None

    def total(self) -> np.ndarray:
        """Per-class values on all images."""
        return self.score({name: a.sum(0) for name, a in self.arrays.items()})

    def only(self, column: int) -> Counts:
        """The counts of one class (their mean is that class's value)."""
        return replace(self, arrays={name: a[:, [column]] for name, a in self.arrays.items()})


Row = Sequence[Counts]  # one Counts per seed, in seed order


@dataclass(frozen=True)
class Interval:
    """A row's mIoU (mean over seeds, all images) and its interval, in points (NaN: σ unknown)."""

    estimate: float
    low: float
    high: float
    se: float  # sqrt(image variance + σ² / S)
    image_se: float  # bootstrap std over the images, seeds held fixed
    df: float  # degrees of freedom of σ (own seeds + what the prior lends)
    seed_std: float | None  # std of this row's per-seed mIoUs (ddof=1); None with one seed
    n_seeds: int
    n_images: int


@dataclass(frozen=True)
class Difference:
    """Δ = mIoU(a) − mIoU(b) on the same images, in points, with its interval and two-sided p (Δ = 0)."""

    estimate: float
    low: float
    high: float
    p: float  # two-sided p-value of Δ = 0 from the same t statistic as the interval
    se: float  # sqrt(image variance + training variance)
    image_se: float  # bootstrap std of Δ with the seeds held fixed (what more seeds cannot shrink)
    df: float  # degrees of freedom of σ_d (own seeds + what the prior lends)
    n_seeds: tuple[int, int]  # fewest seeds of a row on each side
    paired: int = 0  # seeds the Δ is paired on (0: unpaired, the rows' seeds do not match)
    noise: SeedNoise | None = None  # the σ_d (paired) or the rows' σ (unpaired) the interval used


def mean_score(per_class: np.ndarray) -> np.ndarray:
    """The mean over the last axis of per-class values (fractions), in points; NaN classes are left out."""
    present = ~np.isnan(per_class)
    n = present.sum(-1)
    total = np.where(present, per_class, 0.0).sum(-1)
    return 100 * np.divide(total, n, out=np.full(n.shape, np.nan), where=n > 0)


def miou(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """mIoU in points over the last axis of summed counts; classes with union 0 are left out."""
    return mean_score(iou({"inter": inter, "union": union}))


def image_weights(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """(resamples x n) float matrix: how often each of n images is drawn in each resample."""
    drawn = rng.integers(0, n, size=(resamples, n)) + n * np.arange(resamples)[:, None]
    return np.bincount(drawn.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def _check_row(row: Row, what: str) -> int:
    if not row:
        raise IfbfError(f"{what}: no evaluations (no seeds) to compute an interval from")
    n = row[0].shape[0]
    if any(c.shape != row[0].shape for c in row):
        raise IfbfError(f"{what}: seeds were evaluated on different images ({[c.shape for c in row]})")
    if n == 0:
        raise IfbfError(f"{what}: no images")
    return n


def _check_paired(rows: Mapping[str, Row]) -> int:
    sizes = {name: _check_row(row, name) for name, row in rows.items()}
    named = {name: row[0].names for name, row in rows.items() if row[0].names is not None}
    if len(set(sizes.values())) > 1 or len(set(named.values())) > 1:
        raise IfbfError(f"rows {', '.join(rows)} were not evaluated on the same images ({sizes} images); "
                        "compare rows evaluated on one split with one eval setting")
    return next(iter(sizes.values()))


def _seed_sums(row: Row, weights: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Per seed, each of its counts summed under each resample: name -> a (B x K) array."""
    sums = []
    for c in row:
        names, k = list(c.arrays), c.shape[1]
        product = weights @ np.concatenate([c.arrays[n] for n in names], axis=1).astype(np.float64)  # exact: < 2**53
        sums.append({name: product[:, i * k:(i + 1) * k] for i, name in enumerate(names)})
    return sums


def _seed_mious(row: Row, weights: np.ndarray) -> np.ndarray:
    """(n_seeds x B) value of each seed under each image resample."""
    return np.stack([mean_score(c.score(sums)) for c, sums in zip(row, _seed_sums(row, weights))])


# A report asks for the same rows again and again (a row's interval, then every claim naming it), always
# with the draws of one bootstrap seed: the draws of each (n, resamples, seed) and each evaluation's mIoU
# under them are kept, so a row costs one matrix product per report, not one per claim. Same numbers.
_WEIGHTS: dict[tuple[int, int, int], np.ndarray] = {}
_MIOUS: weakref.WeakKeyDictionary[Counts, dict[tuple[int, int, int], np.ndarray]] = weakref.WeakKeyDictionary()


def _shared_weights(key: tuple[int, int, int]) -> np.ndarray:
    if key not in _WEIGHTS:
        if len(_WEIGHTS) >= 2:  # (B x n) floats: 40 MB for 10 000 x 500; keep only the latest
            _WEIGHTS.clear()
        n, resamples, seed = key
        _WEIGHTS[key] = image_weights(np.random.default_rng(seed), n, resamples)
    return _WEIGHTS[key]


def _resampled(rows: Mapping[str, Row], resamples: int, seed: int) -> dict[str, np.ndarray]:
    """Each row's mean over its seeds of the mIoU under shared image resamples, (B,) per row (the
    per-evaluation mIoUs are cached)."""
    key = (_check_paired(rows), resamples, seed)
    result = {}
    for name, row in rows.items():
        todo = [c for c in row if key not in _MIOUS.get(c, {})]
        if todo:
            for c, values in zip(todo, _seed_mious(todo, _shared_weights(key))):
                _MIOUS.setdefault(c, {})[key] = values
        result[name] = np.mean([_MIOUS[c][key] for c in row], axis=0)
    return result


def per_seed(row: Row) -> list[float]:
    """Each seed's value of the row's metric (``Counts.metric``: mIoU unless a table names another) on all
    images, in points."""
    return [float(mean_score(c.total())) for c in row]


def row_score(row: Row) -> float:
    """The row's value of its metric in points: the mean over seeds of each seed's value on all images."""
    return float(np.mean(per_seed(row)))


def row_interval(row: Row, noise: SeedNoise, resamples: int = RESAMPLES, level: float = LEVEL,
                 seed: int = 0) -> Interval:
    """A row's value of its metric (mIoU unless its counts name another) with its interval: bootstrap over the
    images plus σ² / S for training, σ the row's own seeds combined with the prior ``noise`` (``posterior``)."""
    n = _check_row(row, "row")
    values = _resampled({"row": row}, resamples, seed)["row"]
    seeds = per_seed(row)
    image_var = float(np.nanvar(values))
    estimate = float(np.mean(seeds))
    observed = float(np.std(seeds, ddof=1)) if len(row) > 1 else None
    sigma = posterior(noise, seeds)
    if sigma.std is None:
        return Interval(estimate, math.nan, math.nan, math.nan, math.sqrt(image_var), math.nan, observed, len(row), n)
    low, high, se = t_interval(estimate, image_var, sigma.std**2 / len(row), sigma.df, level)
    return Interval(estimate, low, high, se, math.sqrt(image_var), sigma.df, observed, len(row), n)


def paired_difference(a: Row, b: Row, noise: SeedNoise, resamples: int = RESAMPLES, level: float = LEVEL,
                      seed: int = 0, paired: bool = True) -> Difference:
    """Δ = mIoU(a) − mIoU(b), both resampled on the same image draws, paired on the seeds (``set_difference``)."""
    return set_difference([a], [b], noise, resamples, level, seed, paired)


def seed_ids(row: Row) -> list[int]:
    """The training seed of each evaluation of a row (its place in the row where not recorded)."""
    return [i if c.seed is None else c.seed for i, c in enumerate(row)]


def common_seeds(rows: Sequence[Row]) -> list[int]:
    """The seeds every row has, in order."""
    return sorted(set.intersection(*(set(seed_ids(r)) for r in rows)))


def _only(row: Row, seeds: Sequence[int]) -> list[Counts]:
    by_id = dict(zip(seed_ids(row), row))
    return [by_id[s] for s in seeds]


def set_difference(a: Sequence[Row], b: Sequence[Row], noise: SeedNoise, resamples: int = RESAMPLES,
                   level: float = LEVEL, seed: int = 0, paired: bool = True) -> Difference:
    """Δ = mean mIoU of the rows in ``a`` − mean mIoU of the rows in ``b``, every row resampled on the same
    image draws (seeds held fixed). Paired on the seeds all rows share (k ≥ 2, or one seed everywhere): Δ is
    the mean of the per-seed differences d_s and its training part σ_d² / k, σ_d from the d_s and the prior
    (``posterior``; prior σ_d: ``SeedNoise.diff_std``). Otherwise (or ``paired=False``) unpaired: each row's
    σ_r² / S_r with weight 1 / |side|², each σ_r its own seeds with the prior, at the smallest df of them."""
    common = common_seeds([*a, *b])
    if paired and common and (len(common) >= 2 or all(len(r) == 1 for r in (*a, *b))):
        return _paired(a, b, common, noise, resamples, level, seed)
    return _unpaired(a, b, noise, resamples, level, seed)


def _side_means(a: Sequence[Row], b: Sequence[Row], resamples: int, seed: int) -> tuple[float, np.ndarray]:
    """(Δ of the side means on all images, Δ under each shared image resample)."""
    rows = {f"a{i}": row for i, row in enumerate(a)} | {f"b{i}": row for i, row in enumerate(b)}
    means = _resampled(rows, resamples, seed)
    side = {s: np.mean([v for key, v in means.items() if key[0] == s], axis=0) for s in "ab"}
    estimate = float(np.mean([row_score(r) for r in a]) - np.mean([row_score(r) for r in b]))
    return estimate, side["a"] - side["b"]


def _finish(estimate: float, image_var: float, seed_var: float | None, sigma: SeedNoise, level: float,
            n_seeds: tuple[int, int], paired: int) -> Difference:
    if seed_var is None or sigma.std is None:
        nan = math.nan
        return Difference(estimate, nan, nan, nan, nan, math.sqrt(image_var), nan, n_seeds, paired, sigma)
    low, high, se = t_interval(estimate, image_var, seed_var, sigma.df, level)
    p = p_value(estimate, 0.0, image_var, seed_var, sigma.df)
    return Difference(estimate, low, high, p, se, math.sqrt(image_var), sigma.df, n_seeds, paired, sigma)


def _paired(a: Sequence[Row], b: Sequence[Row], common: list[int], noise: SeedNoise, resamples: int, level: float,
            seed: int) -> Difference:
    a, b = [_only(r, common) for r in a], [_only(r, common) for r in b]
    estimate, resampled = _side_means(a, b, resamples, seed)
    d = np.mean([per_seed(r) for r in a], axis=0) - np.mean([per_seed(r) for r in b], axis=0)
    sigma = posterior(noise, list(d), noise.diff_std((len(a), len(b))))
    seed_var = None if sigma.std is None else sigma.std**2 / len(common)
    n_seeds = (min(map(len, a)), min(map(len, b)))
    return _finish(estimate, float(np.nanvar(resampled)), seed_var, sigma, level, n_seeds, len(common))


def _unpaired(a: Sequence[Row], b: Sequence[Row], noise: SeedNoise, resamples: int, level: float,
              seed: int) -> Difference:
    estimate, resampled = _side_means(a, b, resamples, seed)
    sigmas = [(posterior(noise, per_seed(r)), len(r), len(side)) for side in (a, b) for r in side]
    n_seeds = (min(map(len, a)), min(map(len, b)))
    if any(s.std is None for s, _, _ in sigmas):
        return _finish(estimate, float(np.nanvar(resampled)), None, SeedNoise(None), level, n_seeds, 0)
    seed_var = sum(s.std**2 / n / size**2 for s, n, size in sigmas)
    weakest = min((s for s, _, _ in sigmas), key=lambda s: s.df)
    sigma = replace(weakest, source=f"unpaired, the least known row's σ: {weakest.source}")
    return _finish(estimate, float(np.nanvar(resampled)), seed_var, sigma, level, n_seeds, 0)


def class_wins(a: Row, b: Row, noise: SeedNoise, threshold: float, resamples: int = RESAMPLES,
               level: float = LEVEL, seed: int = 0) -> Difference:
    """In how many classes row ``a``'s IoU (mean over seeds) is above row ``b``'s (as a Difference: the
    count, its percentile interval over shared image draws, p of the count = ``threshold``). Each class IoU
    of each resample also moves by a normal draw of its training noise σ² / S (``noise``: one class's σ).
    A class absent from a resample is no win."""
    n = _check_paired({"a": a, "b": b})
    weights = image_weights(np.random.default_rng(seed), n, resamples)
    rng = np.random.default_rng([seed, 1])
    std = noise.std or 0.0

    def class_ious(row: Row) -> np.ndarray:  # (B x K) in points, seeds averaged, training noise drawn
        ious = np.mean([100 * c.score(sums) for c, sums in zip(row, _seed_sums(row, weights))], axis=0)
        return ious + rng.normal(0.0, std / math.sqrt(len(row)), size=ious.shape)

    def full_ious(row: Row) -> np.ndarray:
        return np.mean([c.total() for c in row], axis=0)

    wins = (class_ious(a) > class_ious(b)).sum(1).astype(np.float64)
    low, high = np.percentile(wins, [50 * (1 - level), 50 * (1 + level)])
    # the percentile interval excludes the threshold exactly when this p is below 1 − level
    p = min(1.0, 2 * min(float(np.mean(wins <= threshold)), float(np.mean(wins >= threshold))))
    return Difference(float((full_ious(a) > full_ious(b)).sum()), float(low), float(high), p, float(np.std(wins)),
                      math.nan, math.inf, (len(a), len(b)))
