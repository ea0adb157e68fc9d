"""Bootstrap intervals of mIoU from per-image counts: one row, a paired difference, the best of a sweep.

Input is what every evaluation stores (``evaluations/<key>/per_image.npz``): per image and class the
intersection and union pixel counts, one :class:`Counts` per seed of a row. A resample draws the
images with replacement, sums their counts and recomputes IoU = sum(inter) / sum(union) per class
(never an average of per-image IoUs); a class whose summed union is 0 is left out of the mean, as
``ifbf.engine.metrics.summary`` (and cityscapesscripts) leave out a class that never occurs.

With several seeds the bootstrap is hierarchical: each resample also draws the seeds with replacement
and averages their mIoUs (the images drawn are shared by every seed); the deviation of that average
from the mean of all seeds is scaled by sqrt(n / (n − 1)), since a mean of n values drawn with
replacement varies (n − 1) / n times too little (with 3 seeds: 94% coverage instead of 90%). Rows compared with each other
share the image draws (paired on the images); seeds are paired by index when both rows have as many
seeds, else drawn independently. Every value here is in mIoU points (%), like the paper's tables.

Vectorised: a resample is a row of a (B x n) matrix of how often each image was drawn, so the summed
counts of all resamples are one matrix product (B x n) @ (n x K).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ifbf.errors import IfbfError

RESAMPLES = 10_000
LEVEL = 0.95


@dataclass(frozen=True, eq=False)  # arrays: identity, not element-wise, equality
class Counts:
    """One evaluation (one seed): per image, intersection and union pixel counts of each class."""

    inter: np.ndarray  # [n_images, K] int64
    union: np.ndarray  # [n_images, K] int64
    names: tuple[str, ...] | None = None  # image names, checked when two rows are paired

    def __post_init__(self) -> None:
        if self.inter.ndim != 2 or self.inter.shape != self.union.shape:
            raise IfbfError(f"per-image counts: inter {self.inter.shape} and union {self.union.shape} differ")
        if self.names is not None and len(self.names) != self.inter.shape[0]:
            raise IfbfError(f"per-image counts: {len(self.names)} names for {self.inter.shape[0]} images")


    @classmethod
    def load(cls, path: str | Path) -> Counts:
        """Read ``evaluations/<key>/per_image.npz`` (as written by the run store)."""
        with np.load(path, allow_pickle=False) as data:
            return cls(data["inter"], data["union"], tuple(data["names"].tolist()))

    def only(self, column: int) -> Counts:
        """The counts of one class (its mIoU is that class's IoU)."""
        return Counts(self.inter[:, [column]], self.union[:, [column]], self.names)


Row = Sequence[Counts]  # one Counts per seed


@dataclass(frozen=True)
class Interval:
    """A row's mIoU (mean over seeds, all images) and its bootstrap interval, in points."""

    estimate: float
    low: float
    high: float
    seed_std: float | None  # std of the per-seed mIoUs (ddof=1); None with one seed
    n_seeds: int
    n_images: int


@dataclass(frozen=True)
class Difference:
    """Δ = mIoU(a) − mIoU(b) on the same images, in points, with its bootstrap interval."""

    estimate: float
    low: float
    high: float
    p_le_zero: float  # fraction of resamples with Δ ≤ 0
    se: float  # bootstrap std of Δ (images and seeds resampled)
    image_se: float  # bootstrap std of Δ with the seeds held fixed (what more seeds cannot shrink)
    seed_var: float | None  # variance of one seed's Δ; None when unknown (a row with one seed)
    n_seeds: tuple[int, int]


def miou(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """mIoU in points over the last axis of summed counts; classes with union 0 are left out."""
    inter, union = np.asarray(inter, dtype=np.float64), np.asarray(union, dtype=np.float64)
    iou = np.divide(inter, union, out=np.full(union.shape, np.nan), where=union > 0)
    present = union > 0
    n = present.sum(-1)
    total = np.where(present, iou, 0.0).sum(-1)
    return 100 * np.divide(total, n, out=np.full(n.shape, np.nan), where=n > 0)


def image_weights(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """(resamples x n) float matrix: how often each of n images is drawn in each resample."""
    drawn = rng.integers(0, n, size=(resamples, n)) + n * np.arange(resamples)[:, None]
    return np.bincount(drawn.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def seed_weights(rng: np.random.Generator, n_seeds: int, resamples: int) -> np.ndarray:
    """(resamples x n_seeds) weights summing to 1 per resample: seeds drawn with replacement."""
    if n_seeds == 1:
        return np.ones((resamples, 1))
    return image_weights(rng, n_seeds, resamples) / n_seeds


def _check_row(row: Row, what: str) -> int:
    if not row:
        raise IfbfError(f"{what}: no evaluations (no seeds) to compute an interval from")
    n = row[0].inter.shape[0]
    if any(c.inter.shape != row[0].inter.shape for c in row):
        raise IfbfError(f"{what}: seeds were evaluated on different images ({[c.inter.shape for c in row]})")
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


def _seed_sums(row: Row, weights: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per seed, the summed (inter, union) counts of each resample: two (B x K) arrays."""
    k = row[0].inter.shape[1]
    sums = [weights @ np.concatenate([c.inter, c.union], axis=1).astype(np.float64) for c in row]  # exact: < 2**53
    return [(s[:, :k], s[:, k:]) for s in sums]


def _seed_mious(row: Row, weights: np.ndarray) -> np.ndarray:
    """(n_seeds x B) mIoU of each seed under each image resample."""
    return np.stack([miou(inter, union) for inter, union in _seed_sums(row, weights)])


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


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
    """Each row's per-seed mIoUs (n_seeds x B) under shared image resamples (cached per evaluation)."""
    key = (_check_paired(rows), resamples, seed)
    result = {}
    for name, row in rows.items():
        todo = [c for c in row if key not in _MIOUS.get(c, {})]
        if todo:
            for c, values in zip(todo, _seed_mious(todo, _shared_weights(key))):
                _MIOUS.setdefault(c, {})[key] = values
        result[name] = np.stack([_MIOUS[c][key] for c in row])
    return result


def _seed_draws(seed_mious: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Each row's mIoU (B,) with the seeds drawn too: paired by index when every row has as many."""
    rng = np.random.default_rng([seed, 1])
    counts, resamples = {len(m) for m in seed_mious.values()}, next(iter(seed_mious.values())).shape[1]
    shared = seed_weights(rng, counts.pop(), resamples) if len(counts) == 1 else None
    result = {}
    for name, values in seed_mious.items():
        draws = shared if shared is not None else seed_weights(rng, len(values), resamples)
        mean, n = values.mean(0), len(values)
        # rescaled: a mean of n seeds drawn with replacement varies (n - 1) / n times too little
        result[name] = mean + math.sqrt(n / (n - 1)) * ((draws * values.T).sum(1) - mean) if n > 1 else mean
    return result


def row_miou(row: Row) -> float:
    """The row's mIoU in points: the mean over seeds of each seed's mIoU on all images."""
    return float(np.mean([miou(c.inter.sum(0), c.union.sum(0)) for c in row]))


def miou_interval(row: Row, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> Interval:
    """Bootstrap interval of a row's mIoU (hierarchical over seeds and images)."""
    n = _check_row(row, "row")
    values = _seed_draws(_resampled({"row": row}, resamples, seed), seed)["row"]
    per_seed = [float(miou(c.inter.sum(0), c.union.sum(0))) for c in row]
    low, high = _percentiles(values, level)
    return Interval(float(np.mean(per_seed)), low, high,
                    float(np.std(per_seed, ddof=1)) if len(row) > 1 else None, len(row), n)


def paired_difference(a: Row, b: Row, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> Difference:
    """Δ = mIoU(a) − mIoU(b), both resampled on the same image draws (and seed draws when paired)."""
    return set_difference([a], [b], resamples, level, seed)


def set_difference(a: Sequence[Row], b: Sequence[Row], resamples: int = RESAMPLES, level: float = LEVEL,
                   seed: int = 0) -> Difference:
    """Δ = mean mIoU of the rows in ``a`` − mean mIoU of the rows in ``b`` (a row set is, e.g., one
    ablation step at both depths), every row resampled on the same image draws."""
    rows = {f"a{i}": row for i, row in enumerate(a)} | {f"b{i}": row for i, row in enumerate(b)}
    seed_mious = _resampled(rows, resamples, seed)
    values = _seed_draws(seed_mious, seed)

    def side_mean(data: dict, side: str) -> np.ndarray:
        return np.mean([v for key, v in data.items() if key[0] == side], axis=0)

    delta = side_mean(values, "a") - side_mean(values, "b")
    fixed = side_mean({k: v.mean(0) for k, v in seed_mious.items()}, "a") - side_mean(
        {k: v.mean(0) for k, v in seed_mious.items()}, "b")  # seeds held fixed: images only
    estimate = float(np.mean([row_miou(r) for r in a]) - np.mean([row_miou(r) for r in b]))
    low, high = _percentiles(delta, level)
    return Difference(
        estimate=estimate, low=low, high=high, p_le_zero=float(np.mean(delta <= 0)), se=float(np.nanstd(delta)),
        image_se=float(np.nanstd(fixed)), seed_var=_seed_var(a, b), n_seeds=(min(map(len, a)), min(map(len, b))),
    )


def _per_seed(row: Row) -> list[float]:
    return [float(miou(c.inter.sum(0), c.union.sum(0))) for c in row]


def _seed_var(a: Sequence[Row], b: Sequence[Row]) -> float | None:
    """Variance of one seed's Δ: from paired per-seed Δs when every row has as many seeds (> 1), else
    from each row's seed variance; None when a row has a single seed."""
    counts = {len(row) for row in (*a, *b)}
    if len(counts) == 1 and counts.pop() > 1:
        per_seed = np.mean([_per_seed(r) for r in a], axis=0) - np.mean([_per_seed(r) for r in b], axis=0)
        return float(np.var(per_seed, ddof=1))
    if all(len(row) > 1 for row in (*a, *b)):
        return float(sum(np.var(_per_seed(r), ddof=1) / len(side) ** 2 for side in (a, b) for r in side))
    return None


def class_wins(a: Row, b: Row, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> Interval:
    """In how many classes row ``a``'s IoU (mean over seeds) is above row ``b``'s, with its bootstrap
    interval on shared image (and seed) draws; a class absent from a resample counts as no win."""
    weights = image_weights(np.random.default_rng(seed), _check_paired({"a": a, "b": b}), resamples)
    rng = np.random.default_rng([seed, 1])
    draws = seed_weights(rng, len(a), resamples) if len(a) == len(b) else None

    def class_ious(row: Row) -> np.ndarray:  # (B x K), seeds drawn
        ious = np.stack([np.divide(i, u, out=np.full(u.shape, np.nan), where=u > 0)
                         for i, u in _seed_sums(row, weights)])
        w = draws if draws is not None else seed_weights(rng, len(row), resamples)
        return np.einsum("bs,sbk->bk", w, ious)

    def full_ious(row: Row) -> np.ndarray:
        return np.mean([np.divide(c.inter.sum(0), c.union.sum(0), out=np.full(c.inter.shape[1], np.nan),
                                  where=c.union.sum(0) > 0) for c in row], axis=0)

    wins = (class_ious(a) > class_ious(b)).sum(1)
    low, high = _percentiles(wins.astype(np.float64), level)
    return Interval(float((full_ious(a) > full_ious(b)).sum()), low, high, None, min(len(a), len(b)),
                    a[0].inter.shape[0])


def best_probability(rows: Mapping[str, Row], resamples: int = RESAMPLES, seed: int = 0) -> dict[str, float]:
    """For each row, the fraction of shared resamples in which it has the highest mIoU."""
    values = _seed_draws(_resampled(rows, resamples, seed), seed)
    stacked = np.stack(list(values.values()))
    winners = np.bincount(np.nanargmax(stacked, axis=0), minlength=len(values))
    return {name: float(w / resamples) for name, w in zip(values, winners)}


def seeds_needed(diff: Difference, assumed_seed_std: float = 1.0, power_z: float = 2.8,
                 limit: int = 1000) -> int | None:
    """Seeds per row at which the 95% interval of Δ would exclude 0 with 80% power, if the observed Δ
    were the true effect: solve |Δ| = power_z · sqrt(seed_var / S + image_se²) for S (power_z =
    1.96 + 0.84). ``seed_var`` unknown (one seed) → 2 · ``assumed_seed_std``² (two independent rows).
    None when even infinitely many seeds would not do (the image noise alone is too large: more or
    other images are needed) or more than ``limit`` are."""
    seed_var = diff.seed_var if diff.seed_var is not None else 2 * assumed_seed_std**2
    room = (abs(diff.estimate) / power_z) ** 2 - diff.image_se**2
    if room <= 0 or not math.isfinite(room):
        return None
    needed = max(1, math.ceil(seed_var / room))
    return needed if needed <= limit else None
