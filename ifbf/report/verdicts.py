"""Verdicts on the paper's claims (``ifbf.report.claims``) from per-image counts and the training noise σ.

Every interval is ``ifbf.report.stats``': images bootstrapped, plus the training noise of a Δ paired on the
seeds (σ_d² / k, each claim's own seeds with the prior; docs/verdicts.md).

- ``delta`` / ``value`` (higher, lower) / ``classes``: **supported** when the 95% interval excludes the
  null (0, the threshold) on the claimed side, **size off** (paper preset only) when it does but our Δ also
  differs from the paper's by more than both noises (ours and its one-seed draw), **contradicted** when it
  excludes the null on the other side, **not resolved** otherwise.
- ``value`` about: two one-sided tests with the preset's margin m: supported when the 90 % interval lies in
  paper ± m, contradicted when it lies wholly outside, not resolved when it straddles a bound.
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
from ifbf.report.stats import (LEVEL, RESAMPLES, Counts, Difference, SeedNoise, class_wins, row_interval,
                               p_value, per_seed, posterior, set_difference, t_interval)

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
    ours: float | None = None  # our Δ / value / classes won; best_of: Δ to the rival that decides (its level)
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
    def on_prior(self) -> bool:
        """Its σ is the prior alone: no row of the claim has a second seed to check it."""
        return self.verdict != NOT_EVALUATED and self.noise is not None and self.noise.on_prior

    @property
    def label(self) -> str:
        """The raw verdict as shown: "not resolved (1 seed)" where σ is unknown."""
        return f"{NOT_RESOLVED} (1 seed)" if self.reason == UNKNOWN_STD else self.verdict


@dataclass(frozen=True)
class Context:
    """How a report judges: the equivalence margin of "about" claims, the bootstrap, whether the paper's
    absolute numbers and sizes carry over (``absolute``: the paper preset; a reduced preset judges direction
    only) and the level of the intervals (``--seeds auto``'s looks test at a stricter one)."""

    margin: float = 1.0
    resamples: int = RESAMPLES
    seed: int = 0
    absolute: bool = True
    level: float = LEVEL


def _sided(claim: Claim, low: float, high: float, null: float) -> str:
    """Where the interval lies relative to ``null``, read in the claimed direction."""
    if low > null:
        return SUPPORTED if claim.direction == "higher" else CONTRADICTED
    if high < null:
        return SUPPORTED if claim.direction == "lower" else CONTRADICTED
    return NOT_RESOLVED


def _inside(size: float | None, low: float, high: float) -> bool | None:
    return None if size is None else low <= size <= high


def _power(size: float | None, image_se: float, noise: SeedNoise, paired: bool = True) -> SeedsNeeded:
    if noise.std is None:
        return SeedsNeeded(None, "seed std unknown")
    diff_std = noise.std if paired else math.sqrt(2) * noise.std
    return seeds_for_power(size, image_se, diff_std, ALPHA, prior_df=noise.df if noise.prior_df is None
                           else noise.prior_df)


def _never_predicted(claim: Claim, rows: RowCounts) -> bool:
    return claim.metric != "miou" and all(int(c.inter.sum()) == 0 for r in claim.row_names() for c in rows[r])


def size_check(diff: Difference, size: float, level: float = LEVEL,
               paper_std: float | None = None) -> tuple[float, float]:
    """The interval of our Δ − the paper's Δ, counting the paper's own noise: its Δ is one training of each
    row, so it moves by σ_d (one seed; ``paper_std`` where our Δ is unpaired and its σ is a row's) around the
    truth on these images, beside our own se."""
    sigma = paper_std if paper_std is not None else diff.noise.std if diff.noise is not None else None
    sigma = sigma or 0.0
    seed_var = diff.se**2 - diff.image_se**2 + sigma**2
    low, high, _ = t_interval(diff.estimate - size, diff.image_se**2, seed_var, diff.df, level)
    return low, high


def _delta(claim: Claim, rows: RowCounts, noise: NoiseFor, ctx: Context) -> Verdict:
    prior = noise(claim.metric)
    a, b = ([rows[r] for r in side] for side in claim.rows)
    seeds = tuple(len(rows[r]) for r in claim.row_names())
    if _never_predicted(claim, rows):
        return Verdict(claim, NOT_RESOLVED, 0.0, 0.0, 0.0, 1.0, seeds=seeds, noise=prior,
                       for_paper=SeedsNeeded(None, NEVER_PREDICTED), reason=f"{claim.metric}: {NEVER_PREDICTED}")
    diff = set_difference(a, b, prior, ctx.resamples, ctx.level, ctx.seed)
    sigma = diff.noise or prior
    pairing = f"paired on {diff.paired} seed{'s' if diff.paired != 1 else ''}" if diff.paired else \
        "unpaired (the rows' seeds do not match)"
    if sigma.std is None:
        return Verdict(claim, NOT_RESOLVED, diff.estimate, seeds=seeds, noise=sigma, reason=UNKNOWN_STD)
    verdict = _sided(claim, diff.low, diff.high, 0.0)
    inside, reason = None, pairing
    if ctx.absolute and claim.size is not None:  # the paper's Δ is one draw: its noise counts too
        unpaired = None if diff.paired else max(prior.diff_std((len(a), len(b))) or 0.0,
                                                math.sqrt(2) * (sigma.std or 0.0))
        low, high = size_check(diff, claim.size, ctx.level, unpaired)
        inside = low <= 0 <= high
        if not inside and verdict == SUPPORTED:
            verdict = SIZE_OFF
        if not inside and verdict != CONTRADICTED:
            reason += (f"; the paper's {claim.size:+.2f} lies {'above' if high < 0 else 'below'} ours by more than "
                       "both noises (ours, and its own one-seed draw)")
    return Verdict(claim, verdict, diff.estimate, diff.low, diff.high, diff.p, size_inside=inside, seeds=seeds,
                   noise=sigma, for_paper=_power(claim.size, diff.image_se, sigma, bool(diff.paired)),
                   for_ours=_power(diff.estimate, diff.image_se, sigma, bool(diff.paired)), reason=reason)


def _one_sided(estimate: float, bound: float, image_var: float, seed_var: float, df: float, above: bool) -> float:
    """One-sided p of "the value is beyond ``bound``" against "it lies on the ``above`` side of it"."""
    two = p_value(estimate, bound, image_var, seed_var, df)
    return two / 2 if (estimate > bound) == above else 1 - two / 2


def _about(claim: Claim, est: float, image_var: float, seed_var: float, df: float, margin: float,
           level: float) -> tuple[str, float, float, float]:
    """Two one-sided tests at 1 − level each (the 1 − 2 (1 − level) interval, 90 % for a 95 % report):
    supported when that interval lies within paper ± margin, contradicted when it lies wholly outside;
    (verdict, p, low, high), p the TOST p (inside) or the one-sided p of lying beyond the nearer bound."""
    lo_bound, hi_bound = claim.size - margin, claim.size + margin
    low, high, _ = t_interval(est, image_var, seed_var, df, 2 * level - 1)
    p_in = max(_one_sided(est, lo_bound, image_var, seed_var, df, above=True),
               _one_sided(est, hi_bound, image_var, seed_var, df, above=False))
    if lo_bound <= est <= hi_bound:
        return (SUPPORTED if lo_bound <= low and high <= hi_bound else NOT_RESOLVED), p_in, low, high
    nearer, beyond_above = (hi_bound, True) if est > hi_bound else (lo_bound, False)
    p_out = _one_sided(est, nearer, image_var, seed_var, df, above=beyond_above)
    return (CONTRADICTED if low > hi_bound or high < lo_bound else NOT_RESOLVED), p_out, low, high


def _value(claim: Claim, rows: RowCounts, noise: NoiseFor, ctx: Context) -> Verdict:
    prior = noise(claim.metric)
    row = rows[claim.rows[0][0]]
    interval = row_interval(row, prior, ctx.resamples, ctx.level, ctx.seed)
    sigma = posterior(prior, per_seed(row))
    if sigma.std is None:
        return Verdict(claim, NOT_RESOLVED, interval.estimate, seeds=(len(row),), noise=sigma, reason=UNKNOWN_STD)
    est, low, high = interval.estimate, interval.low, interval.high
    image_var, seed_var = interval.image_se**2, sigma.std**2 / len(row)
    if claim.direction == "about":
        verdict, p, low, high = _about(claim, est, image_var, seed_var, sigma.df, ctx.margin, ctx.level)
        reason = f"equivalence (two one-sided tests, {100 * (2 * ctx.level - 1):g} % interval) within ± {ctx.margin:g}"
        return Verdict(claim, verdict, est, low, high, p, size_inside=_inside(claim.size, low, high),
                       seeds=(len(row),), noise=sigma, reason=reason)
    nearest = claim.threshold if claim.threshold is not None else claim.size
    verdict, reason = _sided(claim, low, high, nearest), f"against {nearest:g}"
    return Verdict(claim, verdict, est, low, high, p_value(est, nearest, image_var, seed_var, sigma.df),
                   size_inside=_inside(claim.size, low, high), seeds=(len(row),), noise=sigma, reason=reason)


def _classes(claim: Claim, rows: RowCounts, noise: NoiseFor, ctx: Context) -> Verdict:
    a, b = (rows[side[0]] for side in claim.rows)
    sigma = noise("miou").one_class(a[0].shape[1])
    if sigma.std is None:
        return Verdict(claim, NOT_RESOLVED, seeds=(len(a), len(b)), noise=sigma, reason=UNKNOWN_STD)
    null = claim.threshold if claim.threshold is not None else a[0].shape[1] / 2
    wins = class_wins(a, b, sigma, null, ctx.resamples, ctx.level, ctx.seed)
    return Verdict(claim, _sided(claim, wins.low, wins.high, null), wins.estimate, wins.low, wins.high, wins.p,
                   size_inside=_inside(claim.size, wins.low, wins.high), seeds=(len(a), len(b)), noise=sigma,
                   reason=f"classes won, against {null:g}")


def _best_of(claim: Claim, rows: RowCounts, noise: NoiseFor, ctx: Context) -> Verdict:
    """Δ of the claimed row to each rival, each at the level its test uses: supported when every Δ is
    resolved above 0 at ``ctx.level`` (intersection–union), contradicted when a Δ is resolved below 0 at the
    Bonferroni level over the rivals. The Δ shown (and drawn) is the one that decides, with that interval."""
    prior, best = noise("miou"), claim.rows[0][0]
    rivals = list(claim.rivals)
    seeds = tuple(len(rows[r]) for r in claim.candidates)
    strict = 1 - (1 - ctx.level) / len(rivals)
    plain = {r: set_difference([rows[best]], [rows[r]], prior, ctx.resamples, ctx.level, ctx.seed) for r in rivals}
    if any(d.noise is None or d.noise.std is None for d in plain.values()):
        closest = min(rivals, key=lambda r: plain[r].estimate)
        return Verdict(claim, NOT_RESOLVED, plain[closest].estimate, seeds=seeds, noise=prior, reason=UNKNOWN_STD)
    # a rival ahead of the claimed row is judged at the Bonferroni level (its interval is the strict one)
    shown = {r: d if d.estimate > 0 else set_difference([rows[best]], [rows[r]], prior, ctx.resamples, strict, ctx.seed)
             for r, d in plain.items()}
    ahead = [r for r in rivals if shown[r].high < 0]
    verdict = SUPPORTED if all(d.low > 0 for d in shown.values()) else CONTRADICTED if ahead else NOT_RESOLVED
    decides = (min(ahead, key=lambda r: shown[r].high) if ahead else min(rivals, key=lambda r: shown[r].low))
    d = shown[decides]
    # supported or not: the p of "above every rival" (a rival ahead counts as p = 1); contradicted: Bonferroni
    p = (max(x.p if x.estimate > 0 else 1.0 for x in plain.values()) if not ahead
         else min(1.0, len(rivals) * d.p))
    level_text = f"{100 * strict:.2f} % (Bonferroni over {len(rivals)} rivals)" if d.estimate <= 0 else \
        f"{100 * ctx.level:g} %"
    reason = (f"Δ to {decides}, at its {level_text} interval; resolved above {sum(x.low > 0 for x in shown.values())}"
              f" of {len(rivals)} rivals" + (f"; resolved below {', '.join(ahead)}" if ahead else ""))
    runner = plain.get(claim.runner_up, plain[decides])  # the paper's runner-up: what its margin is against
    return Verdict(claim, verdict, d.estimate, d.low, d.high, p, seeds=seeds, noise=d.noise,
                   for_paper=_power(claim.size, runner.image_se, runner.noise or prior, bool(runner.paired)),
                   for_ours=_power(runner.estimate, runner.image_se, runner.noise or prior, bool(runner.paired)),
                   reason=reason)


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


def select_metric(rows: RowCounts, metric: str, classes: tuple[str, ...]) -> dict[str, list[Counts]]:
    """Each row's counts of ``metric``: all classes for mIoU, one column for a class (its mIoU is its IoU)."""
    if metric == "miou":
        return {name: list(seeds) for name, seeds in rows.items()}
    column = classes.index(metric)
    return {name: [c.only(column) for c in seeds] for name, seeds in rows.items()}


def judge(claim: Claim, rows: RowCounts, noise: NoiseFor, margin: float = 1.0, resamples: int = RESAMPLES,
          seed: int = 0, absolute: bool = True, level: float = LEVEL) -> Verdict:
    """The raw verdict on one (not all_of) claim from its rows' per-image counts; missing rows, rows that
    do not pair up, or (``absolute=False``: a reduced preset) the paper's absolute numbers: not evaluated.
    ``noise``: the prior σ of a metric; each claim adds its own rows' seeds (``stats.posterior``)."""
    ctx = Context(margin, resamples, seed, absolute, level)
    if claim.kind == "all_of":
        raise ValueError(f"claim {claim.id}: an all_of claim is judged from its parts (judge_all)")
    if claim.kind == "value" and not absolute:
        return Verdict(claim, NOT_EVALUATED, reason="an absolute number of the paper: judged on the paper preset only")
    if missing := [r for r in claim.row_names() if not rows.get(r)]:
        return Verdict(claim, NOT_EVALUATED, reason=f"no per-image counts for {', '.join(missing)}")
    selected = select_metric({r: rows[r] for r in claim.row_names()}, claim.metric, class_names(claim.paper))
    try:
        return JUDGES[claim.kind](claim, selected, noise, ctx)
    except IfbfError as err:  # e.g. rows evaluated on different images: one bad claim never stops a report
        return Verdict(claim, NOT_EVALUATED, reason=str(err))


def judge_all(claims: Sequence[Claim], rows: RowCounts, noise: NoiseFor, margin: float = 1.0,
              resamples: int = RESAMPLES, seed: int = 0, absolute: bool = True, level: float = LEVEL) -> list[Verdict]:
    """Raw verdicts on the claims of one table, all_of claims from the verdicts on their parts."""
    done: dict[str, Verdict] = {}
    for claim in claims:
        done[claim.id] = (_combine(claim, [done[i] for i in claim.of]) if claim.kind == "all_of"
                          else judge(claim, rows, noise, margin, resamples, seed, absolute, level))
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
