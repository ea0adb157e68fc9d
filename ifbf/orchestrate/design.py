"""``reproduce.py --table N --design [--budget H]``: before any training, what each claim needs.

Every claim becomes paired differences Δ of two rows ("contrasts"): a ``delta`` claim one (a claim over row
sets, "helps both depths", one per depth, all of which must be resolved: an intersection–union test); a
``best_of`` claim one per rival, with the paper's gap to it as the size (the nearest rival decides the seeds).
``value`` and ``classes`` claims are no Δ in mIoU between rows and are listed, not designed. For each contrast
``power.seeds_for_power`` gives the paired seeds per row for 80 % power of the report's test at the corrected
level (Bonferroni: 0.05 / m over the m claims of the report, the level Holm starts with), from σ_d (the
preset's prior combined with what this preset's paired seeds measured, weighted by their df) and the
image noise of Δ (measured from per-image counts of finished rows, else assumed: ``IMAGE_SE_PAPER`` at 500
images, scaled by sqrt(500 / val images)). Costs come from ``estimate.predict`` (preflight.json) or what
finished runs took.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import pandas as pd

from ifbf.experiments import Preset, RowSeeds, TableSpec, load_table
from ifbf.orchestrate.cluster import ClusterProfile
from ifbf.orchestrate.estimate import flops_price, predict, split_images
from ifbf.orchestrate.plan import build_plan
from ifbf.orchestrate.preflight import measurements
from ifbf.report import records
from ifbf.report.claims import Claim, load_claims
from ifbf.report.power import POWER, SeedsNeeded, seeds_for_power
from ifbf.report.stats import (SeedNoise, common_seeds, paired_difference, per_seed, pooled_noise,
                               seed_ids)
from ifbf.report.verdicts import RowCounts
from ifbf.store.rundir import RunDir

ALPHA = 0.05  # family-wise level of the report's verdicts
IMAGE_SE_PAPER = 0.25  # assumed std (points) of a paired Δ of two ablation rows from 500 val images alone
PAPER_IMAGES = 500
IMAGE_RESAMPLES = 1000  # bootstrap draws behind a measured image noise (its own error is ~2 %)
RowKey = tuple[int, str]  # (table number, row name)
# the specs do not change while a process runs; --seeds auto and its simulations ask for them at every look
claims_of = functools.cache(load_claims)
table_of = functools.cache(load_table)


@dataclass(frozen=True)
class Contrast:
    """Δ = row ``a`` − row ``b`` of one table; ``size``: the paper's Δ (None: the paper gives no number)."""

    table: int
    a: str
    b: str
    size: float | None


@dataclass(frozen=True)
class Noise:
    """What the seeds are computed from: σ_d, the std of a paired Δ's per-seed differences (its source, and
    the degrees of freedom of the prior the report will combine each claim's seeds with), and the image noise
    of each contrast (measured, or the stated assumption)."""

    diff_std: float | None
    seed_source: str
    prior_df: float
    measured_image_se: dict[tuple[int, str, str], float]
    assumed_image_se: float
    image_basis: str

    def image_se(self, c: Contrast) -> float:
        """The contrast's measured image noise, else the assumed one (``image_basis`` says which)."""
        return self.measured_image_se.get((c.table, c.a, c.b), self.assumed_image_se)


@dataclass(frozen=True)
class ClaimDesign:
    claim: Claim
    contrasts: tuple[tuple[Contrast, float, SeedsNeeded], ...]  # each with its image se and seeds needed
    note: str = ""  # why a claim is not designed (value / classes claims)

    def seeds(self) -> dict[RowKey, int] | None:
        """Seeds per row that resolve the claim (every contrast); None when none do, or it is not designed."""
        if not self.contrasts or any(n.seeds is None for _, _, n in self.contrasts):
            return None
        wanted: dict[RowKey, int] = {}
        for c, _, needed in self.contrasts:
            for row in (c.a, c.b):
                wanted[(c.table, row)] = max(wanted.get((c.table, row), 1), needed.seeds or 1)
        return wanted

    def reason(self) -> str:
        if not self.contrasts:
            return self.note
        failing = [(c, n) for c, _, n in self.contrasts if n.seeds is None]
        if not failing:
            return ""
        # the smallest failing effect: the one the "(min of N)" size beside it shows
        c, n = min(failing, key=lambda f: abs(f[0].size) if f[0].size is not None else math.inf)
        return n.reason if len(self.contrasts) == 1 else f"{n.reason} (Δ {c.a} − {c.b})"


def contrasts(claim: Claim, table: TableSpec) -> tuple[tuple[Contrast, ...], str]:
    """The paired Δs that decide a claim, and a note when it has none (see the module docstring)."""
    paper = {r.name: r.paper.get(claim.metric) for r in table.rows}  # mIoU or one class's IoU

    def gap(a: str, b: str) -> float | None:
        return None if paper.get(a) is None or paper.get(b) is None else round(paper[a] - paper[b], 4)

    if claim.kind == "delta":
        (a, *more_a), (b, *more_b) = claim.rows
        if not more_a and not more_b:
            return (Contrast(table.number, a, b, claim.size),), ""
        sides = zip(claim.rows[0], claim.rows[1])
        return tuple(Contrast(table.number, x, y, gap(x, y)) for x, y in sides), ""
    if claim.kind == "best_of":
        best = claim.rows[0][0]
        return tuple(Contrast(table.number, best, r, gap(best, r)) for r in claim.rivals), ""
    if claim.kind == "all_of":  # "both depths": every part's Δ must be resolved (intersection–union)
        parts = [c for c in claims_of(table.number, table.paper) if c.id in claim.of]
        return tuple(x for part in parts for x in contrasts(part, table)[0]), ""
    what = "an absolute number of one row" if claim.kind == "value" else "a count of classes"
    return (), f"not designed: {what}, not a Δ in mIoU between rows"


def family(claims: list[tuple[Claim, TableSpec]]) -> int:
    """The claims a report tests (its Holm family): an all_of claim follows from its parts and is not counted."""
    return sum(claim.kind != "all_of" for claim, _ in claims)


def level(n_claims: int, looks: int = 1) -> float:
    """The per-test level: ALPHA split over the report's claims (Bonferroni) and over the looks of --seeds auto."""
    return ALPHA / max(1, n_claims) / max(1, looks)


def design(claims: list[tuple[Claim, TableSpec]], noise: Noise, alpha: float,
           power: float = POWER) -> list[ClaimDesign]:
    """Each claim's contrasts with the paired seeds per row that give ``power`` at level ``alpha``."""
    designs = []
    for claim, table in claims:
        found, note = contrasts(claim, table)
        rows = []
        for c in found:
            image_se = noise.image_se(c)
            needed = (seeds_for_power(c.size, image_se, noise.diff_std, alpha, power, prior_df=noise.prior_df)
                      if noise.diff_std is not None else SeedsNeeded(None, "seed std unknown"))
            rows.append((c, image_se, needed))
        designs.append(ClaimDesign(claim, tuple(rows), note))
    return designs


def table_claims(tables: list[TableSpec]) -> list[tuple[Claim, TableSpec]]:
    return [(claim, table) for table in tables for claim in claims_of(table.number, table.paper)]


def present_seeds(tables: list[TableSpec], preset: Preset, results: Path, extra: tuple[str, ...],
                  limit: int = 64) -> pd.DataFrame:
    """The records of every seed of every row that has a result (probing seeds 0..1, 0..3, ... up to ``limit``)."""
    n = 2
    while True:
        frame = records.collect(tables, preset, n, results, extra)
        if n >= limit or not frame[(frame["seed"] >= n // 2) & frame["counts"].notna()].size:
            return frame
        n *= 2


def diff_spread(rows: RowCounts, found: Iterable[Contrast]) -> list[list[float]]:
    """The per-seed differences d_s of each contrast whose rows share at least 2 seeds."""
    groups = []
    for c in found:
        a, b = rows.get(c.a), rows.get(c.b)
        if not a or not b:
            continue
        common = common_seeds([a, b])
        if len(common) >= 2:
            ma, mb = dict(zip(seed_ids(a), per_seed(a))), dict(zip(seed_ids(b), per_seed(b)))
            groups.append([ma[s] - mb[s] for s in common])
    return groups


def val_images(frame: pd.DataFrame) -> int:
    """Images of the val split the table's rows are evaluated on (the paper's 500 when there are no rows)."""
    cfg = next(iter(frame["cell"])).cfg if len(frame) else None
    return split_images(cfg, cfg.data.val_split) if cfg else PAPER_IMAGES


def measure_noise(rows: dict[int, RowCounts], tables: list[TableSpec], preset: Preset, images: int) -> Noise:
    """σ_d: the preset's prior (``report.seed_diff_std``, else sqrt(2) x ``seed_std``) combined with σ_d pooled
    over the contrasts whose rows have several paired seeds, weighted by their degrees of freedom (the best
    estimate to plan with; a prior taken as known stays as it is); image noise of
    each contrast whose rows have per-image counts (seed 0), else the median of those measured, else the
    assumption (``images``: the val split's size). ``rows``: table number -> row name -> Counts per seed."""
    measured: dict[tuple[int, str, str], float] = {}
    prior = preset.report
    found = {c for t in tables for claim in claims_of(t.number, t.paper) for c in contrasts(claim, t)[0]}
    pooled = pooled_noise([d for t in tables for d in diff_spread(rows.get(t.number, {}),
                                                                 [c for c in found if c.table == t.number])], None)
    diff = SeedNoise.prior_of(prior).diff_std()
    source = f"prior of preset {preset.name}: {prior.seed_std_source}"
    nu = prior.seed_std_df if diff is not None else 0.0
    if pooled.measured and math.isfinite(nu):  # the best estimate to plan with: prior and measurement by their df
        diff = math.sqrt((nu * (diff or 0.0) ** 2 + pooled.df * (pooled.std or 0.0) ** 2) / (nu + pooled.df))
        source = (f"measured on {pooled.rows} paired contrast(s) of this preset ({pooled.df:g} df), combined with "
                  f"the prior ({nu:g} df)")
    for table in tables:
        mine = rows.get(table.number, {})
        for c in sorted((c for c in found if c.table == table.number), key=lambda c: (c.a, c.b)):
            if mine.get(c.a) and mine.get(c.b) and (c.table, c.a, c.b) not in measured:
                diff_ab = paired_difference(list(mine[c.a][:1]), list(mine[c.b][:1]), SeedNoise(0.0), IMAGE_RESAMPLES)
                measured[(c.table, c.a, c.b)] = diff_ab.image_se
    if measured:
        image_se = median(measured.values())
        basis = f"measured on {len(measured)} pair(s) of finished rows; others take their median {image_se:.2f}"
    else:
        image_se = IMAGE_SE_PAPER * math.sqrt(PAPER_IMAGES / images)
        basis = (f"assumed: {IMAGE_SE_PAPER} at {PAPER_IMAGES} images x sqrt({PAPER_IMAGES}/{images}) = "
                 f"{image_se:.2f} (no finished rows to measure it on; docs/verdicts.md)")
    prior_df = prior.seed_std_df if prior.seed_std is not None else pooled.df
    return Noise(diff, source, prior_df, measured, image_se, basis)


def training_hours(tables: list[TableSpec], preset: Preset, profile: ClusterProfile, results: Path,
                   extra: tuple[str, ...]) -> dict[RowKey, float | None]:
    """Device-hours of one training (one seed) of each row: what a finished seed 0 took (``RunDir.cost``), else
    the preflight prediction, else None (no figure: run --preflight)."""
    plan = build_plan(tables, preset, RowSeeds(1), results, extra)
    shapes = measurements(results, preset.name)
    hours: dict[RowKey, float | None] = {}
    for cell in plan.cells:
        training = plan.training_of(cell)
        est = predict(training, profile, shapes)
        took = RunDir(training.run_dir).cost() if training.status() == "done" else None
        if took is not None:  # on the devices it had (a CPU run's CPUs): REPORT.md's and --plan's figure
            hours[(cell.table, cell.row.name)] = took.device_hours
        else:
            hours[(cell.table, cell.row.name)] = None if est.seconds is None else est.seconds * est.devices / 3600
    return hours


def flops_hours(tables: list[TableSpec], preset: Preset, profile: ClusterProfile, results: Path,
                extra: tuple[str, ...]) -> dict[RowKey, tuple[float, float]]:
    """Device-hours of one training of each row from this model's own FLOPs (``estimate.flops_price``: at the
    high utilisation, at the low one). Empty when the preset states no peak."""
    processes = profile.submitit_params()["tasks_per_node"]
    cache: dict[object, float] = {}
    hours: dict[RowKey, tuple[float, float]] = {}
    for cell in build_plan(tables, preset, RowSeeds(1), results, extra).cells:
        priced = flops_price(cell.cfg, preset.report, processes, cache)
        if priced is not None:
            hours[(cell.table, cell.row.name)] = priced
    return hours


def assume_missing(hours: dict[RowKey, float | None], preset: Preset,
                   ranges: dict[RowKey, tuple[float, float]] | None = None) -> frozenset[RowKey]:
    """Give the rows without a figure (in place) the high end of their FLOPs-derived range (``ranges``, from
    ``flops_hours``), else the preset's assumed ``report.training_hours``; returns the rows filled."""
    unknown = frozenset(row for row, h in hours.items() if h is None)
    if ranges:
        hours.update({row: ranges[row][1] for row in unknown if row in ranges})
        return frozenset(row for row in unknown if row in ranges)
    if preset.report.training_hours is None:
        return frozenset()
    hours.update({row: preset.report.training_hours for row in unknown})
    return unknown


@dataclass(frozen=True)
class Allocation:
    """What a budget buys: seeds per row, the claims it resolves (in the order bought, with the device-hours
    each added) and those out of reach (with why)."""

    seeds: dict[RowKey, int]
    bought: tuple[tuple[ClaimDesign, float], ...]
    out_of_reach: tuple[tuple[ClaimDesign, str], ...]
    base_hours: float  # one seed of every row
    spent: float


def shared_trainings(tables: list[TableSpec], preset: Preset, results: Path,
                     extra: tuple[str, ...]) -> dict[RowKey, RowKey]:
    """Each row -> the first row that trains the same config (itself when none does): such rows share the
    training of every seed (another table's row, an inference-only row), so a seed of them is paid once."""
    plan = build_plan(tables, preset, RowSeeds(1), results, extra)
    first: dict[str, RowKey] = {}  # run hash (seed 0) -> the first row that trains it
    same: dict[RowKey, RowKey] = {}
    for cell in plan.cells:
        row = (cell.table, cell.row.name)
        same[row] = first.setdefault(plan.training_of(cell).run_hash, row)
    return same


def training_cost(seeds: Mapping[RowKey, int], hours: Mapping[RowKey, float],
                  same: Mapping[RowKey, RowKey] | None = None) -> float:
    """Device-hours of training ``seeds`` per row: rows that share a training (``same``, from
    ``shared_trainings``) pay for it once, at the most seeds any of them asks for."""
    most: dict[RowKey, tuple[int, float]] = {}  # training -> (most seeds asked, its device-hours)
    for row, n in seeds.items():
        key = (same or {}).get(row, row)
        asked, price = most.get(key, (0, 0.0))
        most[key] = (max(n, asked), max(hours[row], price))
    return sum(n * h for n, h in most.values())


def allocate(designs: list[ClaimDesign], hours: dict[RowKey, float], budget: float,
             start: dict[RowKey, int] | None = None, same: Mapping[RowKey, RowKey] | None = None) -> Allocation:
    """Greedy: buy the claim whose missing seeds cost least (rows already bought for another claim are free,
    and so are the seeds of a training another row already has: ``same``), while the budget lasts. Every row
    gets at least one seed (``start``: seeds it has already), paid first."""
    seeds = {row: max(1, (start or {}).get(row, 1)) for row in hours}
    spent = base = training_cost(seeds, hours, same)
    todo = [d for d in designs if d.seeds() is not None]
    bought: list[tuple[ClaimDesign, float]] = []

    def extra(d: ClaimDesign) -> float:
        more = {row: max(n, (d.seeds() or {}).get(row, 0)) for row, n in seeds.items()}
        return training_cost(more, hours, same) - training_cost(seeds, hours, same)

    while todo:
        cheapest = min(todo, key=extra)
        cost = extra(cheapest)
        if spent + cost > budget:
            break
        for row, n in (cheapest.seeds() or {}).items():
            seeds[row] = max(seeds[row], n)
        spent += cost
        bought.append((cheapest, cost))
        todo.remove(cheapest)
    out = [(d, f"its seeds need {extra(d):.2f} more device-hours; {budget - spent:.2f} are left" if spent <= budget
            else "the one-seed pass alone exceeds the budget") for d in todo]
    out += [(d, d.reason()) for d in designs if d.seeds() is None]
    return Allocation(seeds, tuple(bought), tuple(out), base, spent)
