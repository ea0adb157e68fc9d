"""``reproduce.py --seeds auto --budget H``: one seed everywhere, then seeds only where claims are still open.

At most ``LOOKS`` looks at the data. Look 1 has one seed per row; after each look the claims still not resolved
(neither supported nor contradicted) whose design fits in what is left of the budget (``design.allocate``, in
its order: cheapest first) get more seeds on their rows: halfway to the design's seeds at look 2, all of them
at look 3. A look judges as the report does (paired seeds, each claim's σ_d, its own metric) with Holm's
correction at a family-wise 0.05 / LOOKS, so a claim resolved at a look stays resolved in the report (which
uses 0.05 on the same or more data); the open claims are designed for the level Holm gives the first of them
(0.05 / open claims), with σ_d estimated from the prior and what was measured. The report then judges the final
seeds once, with Holm at 0.05: tests/test_adaptive.py and tests/test_seeds_auto_cost.py measure its false
verdicts under Δ = 0 and at the paper's truth. The budget counts every training of the table(s), finished ones
at what they took. Seed s of a row is the cell ``--seeds s+1`` would plan: same hash.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ifbf.errors import IfbfError
from ifbf.experiments import Preset, ReportPrior, RowSeeds, TableSpec, row_label
from ifbf.orchestrate.cluster import ClusterProfile
from ifbf.orchestrate.design import (ClaimDesign, Noise, RowKey, allocate, assume_missing, design, family,
                                     flops_hours, level, measure_noise, shared_trainings, table_claims, training_cost,
                                     training_hours, val_images)
from ifbf.orchestrate.plan import Plan, build_plan
from ifbf.report import records
from ifbf.report.claims import Claim
from ifbf.experiments import class_names
from ifbf.report.stats import SeedNoise
from ifbf.report.verdicts import (ALPHA, NOT_EVALUATED, NOT_RESOLVED, SIZE_OFF, SUPPORTED, NoiseFor, RowCounts,
                                  adjust, judge_all)

LOOKS = 3
POWER = 0.8  # what each look designs the open claims' seeds for
RESAMPLES = 2000  # bootstrap draws behind the image noise of one look's Δ


def prior_noise(prior: ReportPrior, classes: int) -> NoiseFor:
    """The preset's prior σ of a metric, as the report starts from it (a class: sqrt(classes) x the mIoU prior)."""
    base = SeedNoise.prior_of(prior)
    return lambda metric: base if metric == "miou" else base.one_class(classes)


def states_at(claims: list[tuple[Claim, TableSpec]], rows: dict[int, RowCounts], alpha: float,
              prior: ReportPrior) -> dict[str, str]:
    """Each claim's verdict as the report would give it with Holm's correction at family-wise level ``alpha``
    (``verdicts.judge_all`` then ``adjust``: paired seeds, each claim's own σ_d on its own metric with the prior,
    intersection–union for "both" and best-of claims), read as supported / contradicted / not resolved (the
    paper's size is not judged at a look)."""
    noise = prior_noise(prior, len(class_names(claims[0][1].paper)) if claims else 0)
    raw = []
    for number in dict.fromkeys(t.number for _, t in claims):
        mine = [c for c, t in claims if t.number == number]
        raw += judge_all(mine, rows.get(number, {}), noise, prior.margin, RESAMPLES, absolute=False)
    return {v.claim.id: {SIZE_OFF: SUPPORTED, NOT_EVALUATED: NOT_RESOLVED}.get(v.adjusted or v.verdict,
                                                                            v.adjusted or v.verdict)
            for v in adjust(raw, alpha)}


def holm_designs(claims: list[tuple[Claim, TableSpec]], noise: Noise, power: float = POWER) -> list[ClaimDesign]:
    """The open claims' designs at the levels Holm will test them at if the cheaper ones are resolved first: the
    k-th cheapest (seeds needed at 0.05 / m) at 0.05 / (m − k + 1); a "both" claim at its strictest part's."""
    m = family(claims)
    first = design(claims, noise, level(m), power)

    def cost(d: ClaimDesign) -> float:
        wanted = d.seeds()
        return max(wanted.values()) if wanted else math.inf

    order = sorted((d for d in first if d.claim.kind != "all_of"), key=cost)
    levels = {d.claim.id: ALPHA / (m - rank) for rank, d in enumerate(order)}
    out = []
    for claim, table in claims:
        parts = [levels[i] for i in claim.of if i in levels]
        out += design([(claim, table)], noise, levels.get(claim.id, min(parts, default=level(m))), power)
    return out


def next_seeds(designs: list[ClaimDesign], open_ids: set[str], current: dict[RowKey, int],
               hours: dict[RowKey, float], budget: float, look: int,
               same: dict[RowKey, RowKey] | None = None) -> dict[RowKey, int]:
    """Seeds per row for look ``look + 1``: the open claims the budget can buy (``design.allocate``; rows that
    share a training, ``same``, pay for it once) move their rows to ceil(target · look / (LOOKS − 1)) seeds (at
    least one more, at most the target)."""
    wanted = [d for d in designs if d.claim.id in open_ids]
    targets = allocate(wanted, hours, budget, start=current, same=same).seeds
    seeds = dict(current)
    for row, target in targets.items():
        if target > current.get(row, 1):
            step = math.ceil(target * look / (LOOKS - 1))
            seeds[row] = min(target, max(current.get(row, 1) + 1, step))
    return seeds


@dataclass(frozen=True)
class Observation:
    """What one look sees: per-image counts (table -> row -> one Counts per seed), the noise the design
    takes from them, the device-hours of one training of each row (None: no figure) and which rows share a
    training (``design.shared_trainings``; empty: none do)."""

    rows: dict[int, RowCounts]
    noise: Noise
    hours: dict[RowKey, float | None]
    same: dict[RowKey, RowKey] = field(default_factory=dict)


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
    alpha = ALPHA / LOOKS  # each look: Holm across the claims at a family-wise 0.05 / LOOKS
    current = {(t.number, r.name): 1 for t in dict((t.number, t) for _, t in claims).values() for r in t.runnable()}
    done: list[Look] = []
    for number in range(1, LOOKS + 1):
        seen = observe(current)
        states = states_at(claims, seen.rows, alpha, prior)
        open_ids = {cid for cid, state in states.items() if state == NOT_RESOLVED}
        note = "" if number < LOOKS else f"the last of {LOOKS} looks"
        if not note and not open_ids:
            note = "every claim resolved"
        if not note and any(h is None for h in seen.hours.values()):
            note = "no cost figure for every row (a failed run, or no preflight.json)"
        more = current
        if not note:
            hours = {k: v or 0.0 for k, v in seen.hours.items()}
            still = [(c, t) for c, t in claims if c.id in open_ids]
            more = next_seeds(holm_designs(still, seen.noise), open_ids, current, hours, budget, number, seen.same)
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


def run_auto(tables: list[TableSpec], preset: Preset, profile: ClusterProfile, results: Path,
             extra: tuple[str, ...], budget: float, train: Train) -> RowSeeds:
    """Train, look, add seeds, up to LOOKS times (printing each look); returns the seeds per row to report."""
    claims = table_claims(tables)
    _check_first_pass(tables, preset, profile, results, extra, budget)
    print(f"--seeds auto: at most {LOOKS} looks, each judging the {family(claims)} claims with Holm's correction at "
          f"0.05/{LOOKS} = {ALPHA / LOOKS:.4f}; seeds designed for 80 % power at Holm's level of the open claims; "
          f"budget {budget:g} device-hours (finished trainings included)")

    same = shared_trainings(tables, preset, results, extra)

    def observe(seeds: dict[RowKey, int]) -> Observation:
        train(build_plan(tables, preset, row_seeds(seeds), results, extra))
        frame = records.collect(tables, preset, row_seeds(seeds), results, extra)
        rows = {t.number: records.row_counts(frame, t.number) for t in tables}
        return Observation(rows, measure_noise(rows, tables, preset, val_images(frame)),
                           training_hours(tables, preset, profile, results, extra), same)

    history = looks(claims, preset.report, budget, observe, lambda look, more: _show(look, more, preset.paper))
    return row_seeds(history[-1].seeds)


def _check_first_pass(tables: list[TableSpec], preset: Preset, profile: ClusterProfile, results: Path,
                      extra: tuple[str, ...], budget: float) -> None:
    """Refuse before any training when one seed of every row (what runs, finished or not, took or are
    predicted or assumed to take) already exceeds the budget; say so when some rows have no figure at all."""
    hours = training_hours(tables, preset, profile, results, extra)
    ranges = flops_hours(tables, preset, profile, results, extra) if any(h is None for h in hours.values()) else {}
    assumed = assume_missing(hours, preset, ranges)
    known = {row: h for row, h in hours.items() if h is not None}
    base = training_cost(dict.fromkeys(known, 1), known, shared_trainings(tables, preset, results, extra))
    if base > budget:
        basis = (f"; {len(assumed)} row(s) priced from their FLOPs at {preset.report.utilisation[0]:.0%} utilisation"
                 if assumed and ranges else
                 f"; {len(assumed)} row(s) at the preset's assumed {preset.report.training_hours:g}" if assumed else "")
        raise IfbfError(f"--seeds auto --budget {budget:g}: one seed of each of the {len(hours)} rows already costs "
                        f"{base:.2f} device-hours (finished runs, preflight.json{basis}); raise --budget, or train "
                        "one seed with --seeds 1 (--design --budget shows what a budget buys)")
    if len(known) < len(hours):
        print(f"--seeds auto: {len(hours) - len(known)} row(s) without a cost figure (run --preflight): the one-seed "
              "pass is trained whatever it costs, the budget then counts what it took", flush=True)


def _show(look: Look, more: dict[RowKey, int], paper: str) -> None:
    """Print a look as soon as it is decided: each claim's verdict, then the seeds it adds or why none."""
    print(f"look {look.number}: " + ", ".join(f"{cid} {state}" for cid, state in look.states.items()), flush=True)
    added = {row: n for row, n in more.items() if n > look.seeds[row]}
    if added:
        steps = (f"{row_label(t, r, paper)} {look.seeds[(t, r)]}→{n}" for (t, r), n in added.items())
        print("  adding seeds: " + ", ".join(steps), flush=True)
    else:
        print(f"  no more seeds: {look.note}", flush=True)
