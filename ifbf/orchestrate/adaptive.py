"""``reproduce.py --seeds auto --budget H``: one seed everywhere, then seeds only where claims are still open.

At most ``LOOKS`` looks at the data. Look 1 has one seed per row; after each look the claims still not resolved
(neither supported nor contradicted) whose design fits in what is left of the budget (``design.allocate``, in
its order: cheapest first) get more seeds on their rows: halfway to the design's seeds at look 2, all of them
at look 3. Error control under repeated looks: every look tests at ``design.level(m, LOOKS)`` = 0.05 / m /
LOOKS (Bonferroni over the m claims and over the looks), so the chance of any false verdict on a claim across
all looks stays ≤ 0.05 / m whatever the data decide about the seeds. The budget counts every training of the
table(s), finished ones at what they took. Seed s of a row is the cell ``--seeds s+1`` would plan: same hash.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ifbf.errors import IfbfError
from ifbf.experiments import Preset, ReportPrior, RowSeeds, TableSpec
from ifbf.orchestrate.cluster import SlurmProfile
from ifbf.orchestrate.design import (ClaimDesign, Noise, RowKey, allocate, assume_missing, contrasts, design,
                                     family, level, measure_noise, seed_spread, table_claims, table_of,
                                     training_hours, val_images)
from ifbf.orchestrate.plan import Plan, build_plan
from ifbf.report import records
from ifbf.report.claims import Claim
from ifbf.report.verdicts import CONTRADICTED, NOT_RESOLVED, SUPPORTED, RowCounts, select_metric
from ifbf.report.power import delta_se
from ifbf.report.stats import critical_value, paired_difference, row_miou

LOOKS = 3
RESAMPLES = 2000  # bootstrap draws behind the image noise of one look's Δ


def verdict(claim: Claim, rows: RowCounts, alpha: float, prior: ReportPrior) -> str:
    """Supported / contradicted / not resolved at two-sided level ``alpha``: every paired Δ of the claim
    (``design.contrasts``) against delta_se(image noise measured on the counts, seed spread, seeds) with the
    report's critical value (``stats.critical_value``: Cochran–Cox at the df of σ, pooled over the rows' seeds,
    else the preset's prior with its df); "both" and best-of claims need every Δ on the claimed side
    (intersection–union), one Δ on the other contradicts."""
    found, _ = contrasts(claim, table_of(claim.table))
    selected = select_metric(rows, claim.metric)
    if not found or any(not selected.get(c.a) or not selected.get(c.b) for c in found):
        return NOT_RESOLVED
    spread = seed_spread(selected.values(), prior.seed_std, prior.seed_std_source, prior.seed_std_df)
    if spread.std is None:  # σ unknown: no honest test
        return NOT_RESOLVED
    sign = -1.0 if claim.direction == "lower" else 1.0
    sides = []
    for c in found:
        a, b = selected[c.a], selected[c.b]
        estimate = sum(row_miou([x]) for x in a) / len(a) - sum(row_miou([x]) for x in b) / len(b)
        image_se = paired_difference(a, b, spread, RESAMPLES).image_se
        se = delta_se(image_se, spread.std, len(a), len(b))
        q = critical_value(image_se**2, se**2 - image_se**2, spread.df, 1 - alpha)
        # no noise at all (se 0): the sign of the estimate decides
        z = sign * estimate / se if se > 0 else math.copysign(math.inf, sign * estimate) if estimate else 0.0
        sides.append(SUPPORTED if z > q else CONTRADICTED if z < -q else NOT_RESOLVED)
    if CONTRADICTED in sides:
        return CONTRADICTED
    return SUPPORTED if all(s == SUPPORTED for s in sides) else NOT_RESOLVED


def next_seeds(designs: list[ClaimDesign], open_ids: set[str], current: dict[RowKey, int],
               hours: dict[RowKey, float], budget: float, look: int) -> dict[RowKey, int]:
    """Seeds per row for look ``look + 1``: the open claims the budget can buy (``design.allocate``) move their
    rows to ceil(target · look / (LOOKS − 1)) seeds (at least one more, at most the target)."""
    wanted = [d for d in designs if d.claim.id in open_ids]
    targets = allocate(wanted, hours, budget, start=current).seeds
    seeds = dict(current)
    for row, target in targets.items():
        if target > current.get(row, 1):
            step = math.ceil(target * look / (LOOKS - 1))
            seeds[row] = min(target, max(current.get(row, 1) + 1, step))
    return seeds


@dataclass(frozen=True)
class Observation:
    """What one look sees: per-image counts (table -> row -> one Counts per seed), the noise the design
    takes from them, and the device-hours of one training of each row (None: no figure)."""

    rows: dict[int, RowCounts]
    noise: Noise
    hours: dict[RowKey, float | None]


@dataclass(frozen=True)
class Look:
    number: int
    seeds: dict[RowKey, int]  # seeds per row this look saw
    states: dict[str, str]  # claim id -> verdict at this look's level
    note: str = ""  # why no seeds were added after it (when none were)


def looks(claims: list[tuple[Claim, TableSpec]], prior: ReportPrior, budget: float,
          observe: Callable[[dict[RowKey, int]], Observation],
          show: Callable[[Look, dict[RowKey, int]], None] = lambda look, more: None) -> list[Look]:
    """The procedure without its I/O: ``observe`` trains (or simulates) the rows at the given seeds; ``show``
    hears of each look as it is decided, with the seeds per row of the next one (the same when it stops)."""
    alpha = level(family(claims), LOOKS)
    current = {(t.number, r.name): 1 for t in dict((t.number, t) for _, t in claims).values() for r in t.runnable()}
    done: list[Look] = []
    for number in range(1, LOOKS + 1):
        seen = observe(current)
        states = {c.id: verdict(c, seen.rows.get(c.table, {}), alpha, prior) for c, _ in claims}
        open_ids = {cid for cid, state in states.items() if state == NOT_RESOLVED}
        note = "" if number < LOOKS else f"the last of {LOOKS} looks"
        if not note and not open_ids:
            note = "every claim resolved"
        if not note and any(h is None for h in seen.hours.values()):
            note = "no cost figure for every row (a failed run, or no preflight.json)"
        more = current
        if not note:
            hours = {k: v or 0.0 for k, v in seen.hours.items()}
            more = next_seeds(design(claims, seen.noise, alpha), open_ids, current, hours, budget, number)
            if more == current:
                note = "no open claim is resolvable within what is left of the budget"
        done.append(Look(number, dict(current), states, note))
        show(done[-1], more)
        if note:
            return done
        current = more
    return done


Train = Callable[[Plan], None]


def row_seeds(seeds: dict[RowKey, int]) -> RowSeeds:
    return RowSeeds(1, tuple((t, r, n) for (t, r), n in seeds.items() if n > 1))


def run_auto(tables: list[TableSpec], preset: Preset, profile: SlurmProfile, results: Path,
             extra: tuple[str, ...], budget: float, train: Train) -> RowSeeds:
    """Train, look, add seeds, up to LOOKS times (printing each look); returns the seeds per row to report."""
    claims = table_claims(tables)
    _check_first_pass(tables, preset, profile, results, extra, budget)
    print(f"--seeds auto: at most {LOOKS} looks, each at level 0.05/{family(claims)}/{LOOKS} = "
          f"{level(family(claims), LOOKS):.5f} (Bonferroni over {family(claims)} claims and {LOOKS} looks), "
          f"budget {budget:g} device-hours (finished trainings included)")

    def observe(seeds: dict[RowKey, int]) -> Observation:
        train(build_plan(tables, preset, row_seeds(seeds), results, extra))
        frame = records.collect(tables, preset, row_seeds(seeds), results, extra)
        rows = {t.number: records.row_counts(frame, t.number) for t in tables}
        return Observation(rows, measure_noise(rows, tables, preset, val_images(frame)),
                           training_hours(tables, preset, profile, results, extra))

    history = looks(claims, preset.report, budget, observe, _show)
    return row_seeds(history[-1].seeds)


def _check_first_pass(tables: list[TableSpec], preset: Preset, profile: SlurmProfile, results: Path,
                      extra: tuple[str, ...], budget: float) -> None:
    """Refuse before any training when one seed of every row (what runs, finished or not, took or are
    predicted or assumed to take) already exceeds the budget; say so when some rows have no figure at all."""
    hours = training_hours(tables, preset, profile, results, extra)
    assumed = assume_missing(hours, preset)
    known = [h for h in hours.values() if h is not None]
    base = sum(known)
    if base > budget:
        basis = f"; {len(assumed)} row(s) at the preset's assumed {preset.report.training_hours:g}" if assumed else ""
        raise IfbfError(f"--seeds auto --budget {budget:g}: one seed of each of the {len(hours)} rows already costs "
                        f"{base:.2f} device-hours (finished runs, preflight.json{basis}); raise --budget, or train "
                        "one seed with --seeds 1 (--design --budget shows what a budget buys)")
    if len(known) < len(hours):
        print(f"--seeds auto: {len(hours) - len(known)} row(s) without a cost figure (run --preflight): the one-seed "
              "pass is trained whatever it costs, the budget then counts what it took", flush=True)


def _show(look: Look, more: dict[RowKey, int]) -> None:
    """Print a look as soon as it is decided: each claim's verdict, then the seeds it adds or why none."""
    print(f"look {look.number}: " + ", ".join(f"{cid} {state}" for cid, state in look.states.items()), flush=True)
    added = {row: n for row, n in more.items() if n > look.seeds[row]}
    if added:
        print("  adding seeds: " + ", ".join(f"T{t} {r} {look.seeds[(t, r)]}→{n}" for (t, r), n in added.items()),
              flush=True)
    else:
        print(f"  no more seeds: {look.note}", flush=True)
