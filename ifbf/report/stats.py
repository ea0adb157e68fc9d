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
- **training**: σ² / S for S seeds, where σ (:class:`SeedNoise`) is the std of one training's mIoU
  between seeds on fixed images. It is pooled over the report's rows with several seeds (measured, with
  its degrees of freedom) or, without any, the preset's prior (``report.seed_std``, taken as known). Two
  rows train independently: the training part of a Δ is σ² (1/S_a + 1/S_b).

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
from ifbf.rundir import SCORES, iou
from ifbf.report.student import t_quantile, two_sided_p

RESAMPLES = 10_000
LEVEL = 0.95


@dataclass(frozen=True, eq=False)  # arrays: identity, not element-wise, equality
class Counts:
    """One evaluation (one seed): per image, the pixel counts of each class (``rundir.PER_IMAGE_COUNTS``: name ->
    [n_images, K] int64), scored by ``metric`` (a ``rundir.SCORES`` key: its per-class value from summed counts)."""

    arrays: Mapping[str, np.ndarray]
    names: tuple[str, ...] | None = None  # image names, checked when two rows are paired
    metric: str = "miou"

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
class SeedNoise:
    """σ, the std of one training's value (mIoU or a class IoU, points) between seeds on fixed images, and
    where it comes from: ``measured`` on the report's multi-seed rows (pooled, ``df`` degrees of freedom)
    or a prior (``df`` infinite: taken as known, or the df it was measured with). ``std`` None: unknown,
    no honest interval exists."""

    std: float | None
    df: float = math.inf
    source: str = "assumed"
    rows: int = 0  # rows pooled into a measured σ

    @property
    def measured(self) -> bool:
        """Pooled from this report's own multi-seed rows (not a preset's prior)."""
        return self.rows > 0

    def text(self) -> str:
        if self.std is None:
            return "unknown (1 seed, no prior)"
        if self.measured:
            return f"{self.std:.2f} measured (df {self.df:g}, {self.rows} rows)"
        return f"{self.std:.2f} assumed" + (f" (df {self.df:g})" if math.isfinite(self.df) else "")

    def one_class(self, classes: int) -> SeedNoise:
        """A prior for one class's IoU from the mIoU prior: mIoU is the mean of ``classes`` IoUs, so a class
        varies sqrt(classes) times as much when the classes move independently (less when they move
        together: an upper bound for non-negative correlations)."""
        if self.std is None:
            return self
        return replace(self, std=self.std * math.sqrt(classes),
                       source=f"{self.source}; sqrt({classes}) x the mIoU value for one class")


def pooled_noise(groups: Sequence[Sequence[float]], prior: float | None, source: str = "assumed",
                 prior_df: float = math.inf) -> SeedNoise:
    """σ from the per-seed values of each row (``groups``): the pooled within-row variance over the rows
    with at least 2 seeds, df = Σ (S_i − 1); without such rows, the prior (``None``: unknown) with its df
    (infinite: taken as known; finite: a prior measured once on few seeds)."""
    multi = [np.asarray(g, dtype=np.float64) for g in groups if len(g) >= 2]
    if not multi:
        return SeedNoise(prior, prior_df, source)
    df = sum(len(g) - 1 for g in multi)
    variance = sum(float(np.var(g, ddof=1)) * (len(g) - 1) for g in multi) / df
    return SeedNoise(math.sqrt(variance), float(df), "measured", len(multi))


@dataclass(frozen=True)
class Interval:
    """A row's mIoU (mean over seeds, all images) and its interval, in points (NaN: σ unknown)."""

    estimate: float
    low: float
    high: float
    se: float  # sqrt(image variance + σ² / S)
    image_se: float  # bootstrap std over the images, seeds held fixed
    df: float  # degrees of freedom of σ (inf: taken as known)
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
    df: float  # degrees of freedom of σ (inf: taken as known)
    n_seeds: tuple[int, int]  # fewest seeds of a row on each side


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
    """Each seed's value (mIoU) on all images, in points."""
    return [float(mean_score(c.total())) for c in row]


def row_miou(row: Row) -> float:
    """The row's mIoU in points: the mean over seeds of each seed's mIoU on all images."""
    return float(np.mean(per_seed(row)))


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


def miou_interval(row: Row, noise: SeedNoise, resamples: int = RESAMPLES, level: float = LEVEL,
                  seed: int = 0) -> Interval:
    """A row's mIoU with its interval: bootstrap over the images plus σ² / S for training."""
    n = _check_row(row, "row")
    values = _resampled({"row": row}, resamples, seed)["row"]
    seeds = per_seed(row)
    image_var = float(np.nanvar(values))
    estimate = float(np.mean(seeds))
    observed = float(np.std(seeds, ddof=1)) if len(row) > 1 else None
    if noise.std is None:
        return Interval(estimate, math.nan, math.nan, math.nan, math.sqrt(image_var), math.nan, observed, len(row), n)
    low, high, se = t_interval(estimate, image_var, noise.std**2 / len(row), noise.df, level)
    return Interval(estimate, low, high, se, math.sqrt(image_var), noise.df, observed, len(row), n)


def paired_difference(a: Row, b: Row, noise: SeedNoise, resamples: int = RESAMPLES, level: float = LEVEL,
                      seed: int = 0) -> Difference:
    """Δ = mIoU(a) − mIoU(b), both resampled on the same image draws, plus σ² (1/S_a + 1/S_b)."""
    return set_difference([a], [b], noise, resamples, level, seed)


def set_difference(a: Sequence[Row], b: Sequence[Row], noise: SeedNoise, resamples: int = RESAMPLES,
                   level: float = LEVEL, seed: int = 0) -> Difference:
    """Δ = mean mIoU of the rows in ``a`` − mean mIoU of the rows in ``b``, every row resampled on the same
    image draws (seeds held fixed); each row's training noise σ² / S_r enters with weight 1 / |side|²."""
    rows = {f"a{i}": row for i, row in enumerate(a)} | {f"b{i}": row for i, row in enumerate(b)}
    means = _resampled(rows, resamples, seed)
    side = {s: np.mean([v for key, v in means.items() if key[0] == s], axis=0) for s in "ab"}
    image_var = float(np.nanvar(side["a"] - side["b"]))
    estimate = float(np.mean([row_miou(r) for r in a]) - np.mean([row_miou(r) for r in b]))
    n_seeds = (min(map(len, a)), min(map(len, b)))
    if noise.std is None:
        nan = math.nan
        return Difference(estimate, nan, nan, nan, nan, math.sqrt(image_var), nan, n_seeds)
    seed_var = noise.std**2 * sum(1 / len(r) / len(s) ** 2 for s in (a, b) for r in s)
    low, high, se = t_interval(estimate, image_var, seed_var, noise.df, level)
    p = p_value(estimate, 0.0, image_var, seed_var, noise.df)
    return Difference(estimate, low, high, p, se, math.sqrt(image_var), noise.df, n_seeds)


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
