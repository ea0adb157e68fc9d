"""The text of ``reproduce.py --design [--budget H]``: one line per claim, then what a budget buys."""

from __future__ import annotations

import math
from pathlib import Path

from ifbf.experiments import DEFAULT_PAPER, Preset, TableSpec, row_label
from ifbf.orchestrate.cluster import ClusterProfile
from ifbf.orchestrate.design import (ALPHA, Allocation, ClaimDesign, Noise, RowKey, allocate, assume_missing, design,
                                     family, flops_hours, level, measure_noise, present_seeds, shared_trainings,
                                     table_claims, training_cost, training_hours, val_images)
from ifbf.report import records
from ifbf.report.power import POWER

NO_COST = "run --preflight"


def claim_hours(d: ClaimDesign, hours: dict[RowKey, float | None],
                same: dict[RowKey, RowKey] | None = None) -> float | None:
    """Device-hours of the claim's rows at the seeds it needs (their first seeds included; a training two of
    its rows share, paid once)."""
    wanted = d.seeds()
    if wanted is None or any(hours.get(row) is None for row in wanted):
        return None
    return training_cost(wanted, {row: hours[row] or 0.0 for row in wanted}, same)


def _size(d: ClaimDesign) -> str:
    sizes = [c.size for c, _, _ in d.contrasts if c.size is not None]
    if not d.contrasts or not sizes:
        return "—"
    smallest = min(sizes, key=abs)
    return f"{smallest:+.2f}" + (f" (min of {len(d.contrasts)})" if len(d.contrasts) > 1 else "")


def claim_lines(designs: list[ClaimDesign], hours: dict[RowKey, float | None],
                assumed: frozenset[RowKey] = frozenset(), same: dict[RowKey, RowKey] | None = None) -> list[str]:
    """One line per claim; a device-hours figure that rests on the preset's assumed cost ends in ``*``."""
    width = max([18, *(len(d.claim.id) for d in designs)])
    lines = [f"  {'claim':{width}s} {'paper Δ':>17s} {'image se':>9s} {'seeds/row':>9s} {'device-h':>15s}  note",]
    for d in designs:
        wanted = d.seeds()
        image = max((se for _, se, _ in d.contrasts), default=None)
        cost = claim_hours(d, hours, same)
        star = "*" if wanted and set(wanted) & assumed else ""
        cost_text = f"{cost:.2f}{star}" if cost is not None else ("—" if wanted is None else NO_COST)
        note = d.reason() if wanted is None else ("a Δ to each rival must be resolved"
                                                 if d.claim.kind == "best_of" else
                                                 "each pair must be resolved" if len(d.contrasts) > 1 else "")
        lines.append(f"  {d.claim.id:{width}s} {_size(d):>17s} {'—' if image is None else f'{image:.2f}':>9s} "
                     f"{'—' if wanted is None else str(max(wanted.values())):>9s} {cost_text:>15s}  {note}")
    return lines


def cost_line(hours: dict[RowKey, float | None], preset: Preset,
              ranges: dict[RowKey, tuple[float, float]] | None = None) -> tuple[str, frozenset[RowKey]]:
    """What one training costs and where that comes from; fills rows without a figure (in place) from the
    FLOPs-derived range's high end (``ranges``) or the preset's assumed ``report.training_hours``, and returns
    the rows it filled."""
    unknown = sum(h is None for h in hours.values())
    if not unknown:
        return "cost of one training: what finished runs took, else preflight.json", frozenset()
    prior = preset.report
    filled = assume_missing(hours, preset, ranges)
    if not filled:
        return (f"cost of one training: {unknown} of {len(hours)} row(s) without a figure: {NO_COST} "
                "(same --executor/--profile)"), filled
    if ranges:
        spans = [ranges[row] for row in filled]
        low, high = min(s[0] for s in spans), max(s[1] for s in spans)
        return (f"cost of one training: {len(filled)} of {len(hours)} row(s) priced from the model's own FLOPs, "
                f"{low:.2f}-{high:.2f} device-hours a row at {prior.utilisation[1]:.0%}-{prior.utilisation[0]:.0%} "
                f"of {prior.peak_tflops:g} TFLOP/s; costs below take each row's high end (marked *); measure them "
                f"with {NO_COST} (same --executor/--profile)\n  the utilisation (preset {preset.name}): "
                f"{prior.utilisation_source}"), filled
    return (f"cost of one training: {unknown} of {len(hours)} row(s) ASSUMED at {prior.training_hours:g} "
            f"device-hours each (marked *); measure them with {NO_COST} (same --executor/--profile)\n"
            f"  the assumption (preset {preset.name}, report.training_hours): {prior.training_hours_source}"), filled


def budget_lines(alloc: Allocation, budget: float, assumed: int = 0, paper: str = DEFAULT_PAPER,
                 trainings: int | None = None) -> list[str]:
    shared = "" if trainings in (None, len(alloc.seeds)) else f" ({trainings} trainings: rows of one config share theirs)"
    lines = [f"Budget {budget:g} device-hours: one seed of each of {len(alloc.seeds)} rows{shared} costs "
             f"{alloc.base_hours:.2f}{f' ({assumed} at the assumed cost)' if assumed else ''}; "
             "then the claim whose extra seeds cost least, while the budget lasts:"]
    if alloc.base_hours > budget:
        lines.append(f"  the one-seed pass alone exceeds the budget by {alloc.base_hours - budget:.2f} device-hours")
    lines += [f"  resolvable  {d.claim.id:18s} +{cost:.2f} h" for d, cost in alloc.bought]
    lines += [f"  out of reach  {d.claim.id:18s} {_size(d)}: {why}" for d, why in alloc.out_of_reach]
    extra = {row: n for row, n in alloc.seeds.items() if n > 1}
    rows = ", ".join(f"{row_label(t, name, paper)}: {n}" for (t, name), n in extra.items())
    lines.append(f"Seeds per row: {rows} (others: 1)" if rows else "Seeds per row: one everywhere")
    both = sum(d.claim.kind == "all_of" for d, *_ in (*alloc.bought, *alloc.out_of_reach))
    lines.append(f"This plan costs {alloc.spent:.2f} device-hours of the {budget:g} budgeted; {len(alloc.bought)} of "
                 f"{len(alloc.bought) + len(alloc.out_of_reach)} claims resolvable"
                 + (f" ('both depths' claims included: {both})" if both else ""))
    return lines


def header(tables: list[TableSpec], preset: Preset, n_claims: int, alpha: float, noise: Noise) -> list[str]:
    numbers = ", ".join(str(t.number) for t in tables)
    return [
        f"Design for table(s) {numbers}, preset {preset.name}: {n_claims} claims tested (a 'both depths' claim is "
        f"its per-depth claims, not one more); seeds per row for {POWER:.0%} power at {ALPHA:g}/{n_claims} = "
        f"{alpha:.4f} per claim (Bonferroni over the report's claims)",
        f"σ_d (std of a paired Δ's per-seed differences): "
        f"{'unknown' if noise.diff_std is None else f'{noise.diff_std:.2f} mIoU'} ({noise.seed_source}); seeds "
        f"are for the report's test: Cochran–Cox at the df σ_d will have (prior {noise.prior_df:g} df, lending at "
        "most max(2, S − 1))",
        f"image noise of a paired Δ: {noise.image_basis}",
    ]


def run_design(tables: list[TableSpec], preset: Preset, profile: ClusterProfile, results: Path,
               extra: tuple[str, ...], budget: float | None) -> int:
    """Print the design (and, with ``budget``, the allocation); trains nothing. Returns 0."""
    claims = table_claims(tables)
    frame = present_seeds(tables, preset, results, extra)
    rows = {t.number: records.row_counts(frame, t.number) for t in tables}
    noise = measure_noise(rows, tables, preset, val_images(frame))
    alpha = level(family(claims))
    designs = design(claims, noise, alpha)
    hours = training_hours(tables, preset, profile, results, extra)
    lines = header(tables, preset, family(claims), alpha, noise)
    ranges = flops_hours(tables, preset, profile, results, extra) if any(h is None for h in hours.values()) else {}
    cost, assumed = cost_line(hours, preset, ranges)
    lines.append(cost)
    same = shared_trainings(tables, preset, results, extra)
    lines += claim_lines(designs, hours, assumed, same)
    if budget is not None:
        if any(h is None for h in hours.values()):
            lines.append(f"Budget {budget:g}: cannot allocate without the cost of every row: {NO_COST}")
        else:
            known = {row: h for row, h in hours.items() if h is not None}
            lines += budget_lines(allocate(designs, known, budget, same=same), budget, len(assumed), preset.paper,
                                  len(set(same.values())))
            everything = allocate(designs, known, math.inf, same=same)
            lines.append(f"Every claim that can be resolved ({len(everything.bought)}) needs {everything.spent:.2f} "
                         "device-hours in all")
    print("\n".join(lines))
    return 0
