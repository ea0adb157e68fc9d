"""Verdicts on the paper's claims (``ifbf.report.claims``) from per-image counts and the training noise σ.

Every interval is ``ifbf.report.stats``': images bootstrapped, plus σ² / S per row (docs/verdicts.md).

- ``delta`` / ``value`` (higher, lower) / ``classes``: **supported** when the 95% interval excludes the
  null (0, the threshold) on the claimed side, **size off** when it does but also excludes the paper's
  size, **contradicted** when it excludes the null on the other side, **not resolved** otherwise.
- ``value`` about: an equivalence test with the preset's margin m: supported when the interval lies in
  paper ± m, contradicted when it lies outside, not resolved when it straddles a bound.
- ``best_of``: one Δ to each rival. Supported when every Δ is resolved above 0 (intersection–union);
  contradicted when a Δ to a named rival is resolved below 0 at the Bonferroni level over the rivals.
- ``all_of`` ("both depths"): supported only when each claim listed is (intersection–union); contradicted
  when one is contradicted. Derived, so left out of the Holm family and of the totals.
- **not evaluated**: a row has no per-image counts, or an absolute number of the paper on a reduced preset.
  **not resolved (1 seed)**: σ is unknown (no multi-seed row, no prior): no honest interval exists.

Each verdict carries its p-value (two-sided, from the interval's own statistic: the interval excludes the
null exactly when p < 0.05); ``adjust`` applies Holm's step-down across the claims of one report and
records the adjusted verdict beside the raw one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from ifbf.errors import IfbfError
from ifbf.experiments import class_names
from ifbf.report.claims import Claim
from ifbf.report.power import NEVER_PREDICTED, SeedsNeeded, seeds_for_power
from ifbf.report.stats import (LEVEL, RESAMPLES, Counts, SeedNoise, class_wins, miou_interval, p_value,
                               set_difference)

SUPPORTED, SIZE_OFF, CONTRADICTED = "supported", "size off", "contradicted"
NOT_RESOLVED, NOT_EVALUATED = "not resolved", "not evaluated"
VERDICTS = (SUPPORTED, SIZE_OFF, CONTRADICTED, NOT_RESOLVED, NOT_EVALUATED)
RESOLVED = (SUPPORTED, SIZE_OFF, CONTRADICTED)
ALPHA = 1 - LEVEL
UNKNOWN_STD = "1 seed and no seed-std prior (report.seed_std): no honest interval"

RowCounts = Mapping[str, Sequence[Counts]]  # row name -> one Counts per seed, in seed order (same images)
NoiseFor = Callable[[str], SeedNoise]  # metric ("miou" or a class) -> its σ between seeds


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    verdict: str  # the raw verdict, one of VERDICTS
    ours: float | None = None  # our Δ / value / classes won; best_of: Δ to the strongest rival
    low: float | None = None  # 95% interval of ``ours``
    high: float | None = None
    p: float | None = None  # two-sided p of the claim's null (raw)
    adjusted: str | None = None  # the verdict after Holm across the report's claims (``adjust``)
    p_holm: float | None = None
    size_inside: bool | None = None  # the paper's size lies in our interval
    seeds: tuple[int, ...] = ()  # seeds behind each row the claim names
    noise: SeedNoise | None = None  # the σ used
    for_paper: SeedsNeeded | None = None  # seeds per row for 80% power against the paper's size
    for_ours: SeedsNeeded | None = None  # ... against the size we observe
    reason: str = ""

    @property
    def counted(self) -> bool:
        """Whether the totals count it: an ``all_of`` claim follows from claims counted already."""
        return self.claim.kind != "all_of"

    @property
    def label(self) -> str:
        """The raw verdict as shown: "not resolved (1 seed)" where σ is unknown."""
        return f"{NOT_RESOLVED} (1 seed)" if self.reason == UNKNOWN_STD else self.verdict


def _sided(claim: Claim, low: float, high: float, null: float) -> str:
    """Where the interval lies relative to ``null``, read in the claimed direction."""
    if low > null:
        return SUPPORTED if claim.direction == "higher" else CONTRADICTED
    if high < null:
        return SUPPORTED if claim.direction == "lower" else CONTRADICTED
    return NOT_RESOLVED


def _inside(size: float | None, low: float, high: float) -> bool | None:
    return None if size is None else low <= size <= high


def _power(size: float | None, image_se: float, noise: SeedNoise) -> SeedsNeeded:
    if noise.std is None:
        return SeedsNeeded(None, "seed std unknown")
    return seeds_for_power(size, image_se, noise.std, ALPHA)


def _never_predicted(claim: Claim, rows: RowCounts) -> bool:
    return claim.metric != "miou" and all(int(c.inter.sum()) == 0 for r in claim.row_names() for c in rows[r])


def _delta(claim: Claim, rows: RowCounts, noise: NoiseFor, margin: float, resamples: int, seed: int) -> Verdict:
    sigma = noise(claim.metric)
    a, b = ([rows[r] for r in side] for side in claim.rows)
    seeds = tuple(len(rows[r]) for r in claim.row_names())
    if _never_predicted(claim, rows):
        return Verdict(claim, NOT_RESOLVED, 0.0, 0.0, 0.0, 1.0, seeds=seeds, noise=sigma,
                       for_paper=SeedsNeeded(None, NEVER_PREDICTED), reason=f"{claim.metric}: {NEVER_PREDICTED}")
    diff = set_difference(a, b, sigma, resamples, LEVEL, seed)
    if sigma.std is None:
        return Verdict(claim, NOT_RESOLVED, diff.estimate, seeds=seeds, noise=sigma, reason=UNKNOWN_STD)
    verdict, inside = _sided(claim, diff.low, diff.high, 0.0), _inside(claim.size, diff.low, diff.high)
    verdict = SIZE_OFF if verdict == SUPPORTED and inside is False else verdict
    reason = ""
    if inside is False and verdict != CONTRADICTED:
        reason = f"the paper's {claim.size:+.2f} lies {'above' if claim.size > diff.high else 'below'} our interval"
    return Verdict(claim, verdict, diff.estimate, diff.low, diff.high, diff.p, size_inside=inside, seeds=seeds,
                   noise=sigma, for_paper=_power(claim.size, diff.image_se, sigma),
                   for_ours=_power(diff.estimate, diff.image_se, sigma), reason=reason)


def _value(claim: Claim, rows: RowCounts, noise: NoiseFor, margin: float, resamples: int, seed: int) -> Verdict:
    sigma = noise(claim.metric)
    row = rows[claim.rows[0][0]]
    interval = miou_interval(row, sigma, resamples, LEVEL, seed)
    if sigma.std is None:
        return Verdict(claim, NOT_RESOLVED, interval.estimate, seeds=(len(row),), noise=sigma, reason=UNKNOWN_STD)
    est, low, high = interval.estimate, interval.low, interval.high
    image_var, seed_var = interval.image_se**2, sigma.std**2 / len(row)
    if claim.direction == "about":  # equivalence: inside paper ± margin, or wholly outside it
        bounds = (claim.size - margin, claim.size + margin)
        verdict = (SUPPORTED if bounds[0] <= low and high <= bounds[1] else
                   CONTRADICTED if low > bounds[1] or high < bounds[0] else NOT_RESOLVED)
        nearest = min(bounds, key=lambda b: abs(est - b))
        reason = f"equivalence margin ± {margin:g} about {claim.size:g}"
    else:
        nearest = claim.threshold if claim.threshold is not None else claim.size
        verdict, reason = _sided(claim, low, high, nearest), f"against {nearest:g}"
    return Verdict(claim, verdict, est, low, high, p_value(est, nearest, image_var, seed_var, sigma.df),
                   size_inside=_inside(claim.size, low, high), seeds=(len(row),), noise=sigma, reason=reason)


def _classes(claim: Claim, rows: RowCounts, noise: NoiseFor, margin: float, resamples: int, seed: int) -> Verdict:
    a, b = (rows[side[0]] for side in claim.rows)
    sigma = noise("miou").one_class(len(class_names()))
    null = claim.threshold if claim.threshold is not None else a[0].shape[1] / 2
    wins = class_wins(a, b, sigma, null, resamples, LEVEL, seed)
    return Verdict(claim, _sided(claim, wins.low, wins.high, null), wins.estimate, wins.low, wins.high, wins.p,
                   size_inside=_inside(claim.size, wins.low, wins.high), seeds=(len(a), len(b)), noise=sigma,
                   reason=f"classes won, against {null:g}")


def _best_of(claim: Claim, rows: RowCounts, noise: NoiseFor, margin: float, resamples: int, seed: int) -> Verdict:
    """Δ of the claimed row to each rival: supported when all are resolved above 0, contradicted when one
    is resolved below 0 at level α / rivals (a named rival is better)."""
    sigma, best = noise("miou"), claim.rows[0][0]
    rivals = [r for r in claim.among if r != best]
    seeds = tuple(len(rows[r]) for r in claim.among)
    diffs = {r: set_difference([rows[best]], [rows[r]], sigma, resamples, LEVEL, seed) for r in rivals}
    closest = min(rivals, key=lambda r: diffs[r].estimate)
    if sigma.std is None:
        return Verdict(claim, NOT_RESOLVED, diffs[closest].estimate, seeds=seeds, noise=sigma, reason=UNKNOWN_STD)
    above = [r for r in rivals if diffs[r].estimate < 0 and len(rivals) * diffs[r].p < ALPHA]
    if all(d.estimate > 0 for d in diffs.values()):
        p = max(d.p for d in diffs.values())
    else:
        p = min(min(1.0, len(rivals) * d.p) for d in diffs.values() if d.estimate <= 0)
    verdict = SUPPORTED if all(d.low > 0 for d in diffs.values()) else CONTRADICTED if above else NOT_RESOLVED
    below = sum(d.low > 0 for d in diffs.values())
    reason = f"Δ to the closest rival, {closest}; resolved above {below} of {len(rivals)} rivals"
    if above:
        reason += f"; resolved below {', '.join(above)} (Bonferroni over {len(rivals)} rivals)"
    runner = diffs.get(claim.runner_up, diffs[closest])  # the paper's runner-up: what its margin is against
    d = diffs[closest]
    return Verdict(claim, verdict, d.estimate, d.low, d.high, p, seeds=seeds, noise=sigma,
                   for_paper=_power(claim.size, runner.image_se, sigma),
                   for_ours=_power(runner.estimate, runner.image_se, sigma), reason=reason)


def _all_of(claim: Claim, parts: Sequence[Verdict], adjusted: bool = False) -> str:
    """Intersection–union: supported only when every part is (size off when one is only in direction);
    contradicted when one part is; not evaluated when one is."""
    words = [(v.adjusted or v.verdict) if adjusted else v.verdict for v in parts]
    if NOT_EVALUATED in words:
        return NOT_EVALUATED
    if all(w in (SUPPORTED, SIZE_OFF) for w in words):
        return SUPPORTED if all(w == SUPPORTED for w in words) else SIZE_OFF
    return CONTRADICTED if CONTRADICTED in words else NOT_RESOLVED


def _combine(claim: Claim, parts: Sequence[Verdict]) -> Verdict:
    """An all_of claim from its parts' verdicts, shown with its weakest part: one not evaluated, else the
    most contradicted, else the least resolved (largest p)."""

    def against(v: Verdict) -> tuple[int, float]:
        p = 1.0 if v.p is None or math.isnan(v.p) else v.p
        rank = {NOT_EVALUATED: 3, CONTRADICTED: 2, NOT_RESOLVED: 1}.get(v.verdict, 0)
        return rank, (1 - p if v.verdict == CONTRADICTED else p)

    weakest = max(parts, key=against)
    needs = [v.for_paper for v in parts if v.for_paper is not None]
    for_paper = next((n for n in needs if n.seeds is None), max(needs, key=lambda n: n.seeds or 0, default=None))
    return Verdict(claim, _all_of(claim, parts), weakest.ours, weakest.low, weakest.high, weakest.p,
                   seeds=tuple(s for v in parts for s in v.seeds), noise=weakest.noise, for_paper=for_paper,
                   reason=f"all of {', '.join(claim.of)}; weakest: {weakest.claim.id}")


JUDGES = {"delta": _delta, "value": _value, "classes": _classes, "best_of": _best_of}


def select_metric(rows: RowCounts, metric: str) -> dict[str, list[Counts]]:
    """Each row's counts of ``metric``: all classes for mIoU, one column for a class (its mIoU is its IoU)."""
    if metric == "miou":
        return {name: list(seeds) for name, seeds in rows.items()}
    column = class_names().index(metric)
    return {name: [c.only(column) for c in seeds] for name, seeds in rows.items()}


def judge(claim: Claim, rows: RowCounts, noise: NoiseFor, margin: float = 1.0, resamples: int = RESAMPLES,
          seed: int = 0, absolute: bool = True) -> Verdict:
    """The raw verdict on one (not all_of) claim from its rows' per-image counts; missing rows, rows that
    do not pair up, or (``absolute=False``: a reduced preset) the paper's absolute numbers: not evaluated."""
    if claim.kind == "all_of":
        raise ValueError(f"claim {claim.id}: an all_of claim is judged from its parts (judge_all)")
    if claim.kind == "value" and not absolute:
        return Verdict(claim, NOT_EVALUATED, reason="an absolute number of the paper: judged on the paper preset only")
    if missing := [r for r in claim.row_names() if not rows.get(r)]:
        return Verdict(claim, NOT_EVALUATED, reason=f"no per-image counts for {', '.join(missing)}")
    selected = select_metric({r: rows[r] for r in claim.row_names()}, claim.metric)
    try:
        return JUDGES[claim.kind](claim, selected, noise, margin, resamples, seed)
    except IfbfError as err:  # e.g. rows evaluated on different images: one bad claim never stops a report
        return Verdict(claim, NOT_EVALUATED, reason=str(err))


def judge_all(claims: Sequence[Claim], rows: RowCounts, noise: NoiseFor, margin: float = 1.0,
              resamples: int = RESAMPLES, seed: int = 0, absolute: bool = True) -> list[Verdict]:
    """Raw verdicts on the claims of one table, all_of claims from the verdicts on their parts."""
    done: dict[str, Verdict] = {}
    for claim in claims:
        done[claim.id] = (_combine(claim, [done[i] for i in claim.of]) if claim.kind == "all_of"
                          else judge(claim, rows, noise, margin, resamples, seed, absolute))
    return [done[c.id] for c in claims]


def adjust(verdicts: Sequence[Verdict], alpha: float = ALPHA) -> list[Verdict]:
    """Holm's step-down over the report's counted claims with a p-value: the k-th smallest p is compared
    with alpha / (m − k + 1). A resolved verdict whose adjusted p is not below alpha becomes not
    resolved; all_of claims are then re-derived from their parts' adjusted verdicts."""
    tested = sorted((i for i, v in enumerate(verdicts) if v.counted and v.p is not None and not math.isnan(v.p)),
                    key=lambda i: verdicts[i].p)
    out, running = list(verdicts), 0.0
    for rank, i in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * verdicts[i].p))
        v = verdicts[i]
        out[i] = replace(v, p_holm=running, adjusted=v.verdict if running < alpha or v.verdict not in RESOLVED
                         else NOT_RESOLVED)
    out = [v if v.adjusted is not None or not v.counted else replace(v, adjusted=v.verdict) for v in out]
    by_id = {(v.claim.table, v.claim.id): v for v in out}
    return [replace(v, adjusted=_all_of(v.claim, [by_id[(v.claim.table, i)] for i in v.claim.of], adjusted=True))
            if not v.counted else v for v in out]
