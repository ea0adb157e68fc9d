"""``results/<preset>/REPORT.md``: every table's rows with their 95% intervals beside the paper's values,
the paper's claims with verdicts, the figures, the compute spent and links to the table files.

Reads nothing but the records frame (``report.records``); the statistics are ``report.stats`` /
``report.verdicts`` and the markdown ``report.report_md``. Each claim's bootstrap draws the images of its
rows from one fixed seed, so the verdicts are reproducible run to run. Each claim's training noise is its own
paired seeds combined with the prior (the preset's, or the σ pooled over the report's multi-seed rows where
larger: ``records.seed_noise``), and Holm's correction runs across the claims of all its tables.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ifbf.experiments import DEFAULT_PAPER, Preset, TableSpec, class_names, load_paper, report_all_command
from ifbf.report.claims import load_claims
from ifbf.report.figures import plot_claims
from ifbf.report.forest import claim_lines
from ifbf.report.records import compute, row_counts, seed_noise
from ifbf.report.report_md import TableSection, render_report
from ifbf.report.stats import RESAMPLES
from ifbf.report.tables import display_all, metric_frame
from ifbf.report.verdicts import adjust, judge_all
from ifbf.store.rundir import RunCost
from ifbf.store.safefile import atomic_write_text, make_dirs

REPORT = "REPORT.md"


def table_section(records: pd.DataFrame, table: TableSpec, paths: Sequence[Path], out: Path, preset: Preset,
                  resamples: int = RESAMPLES) -> TableSection:
    """One table of REPORT.md: its runnable rows (paper, ours, 95% CI, Δ of each of its scores; seeds), its claims
    judged (raw; ``write_report`` adjusts them across tables) from the rows' per-image counts, its figures and
    links."""
    shown = display_all({metric: metric_frame(records, table, table.runnable(), switches=False, metric=metric)
                         for metric in table.scores})
    counts = row_counts(records, table.number)
    noise = functools.cache(functools.partial(seed_noise, records))
    verdicts = judge_all(load_claims(table.number, table.paper), counts, noise, preset.report.margin, resamples,
                         absolute=preset.absolute)
    files = [p for p in paths if p.parent == out]
    links = {p.name: p.name for p in files if p.suffix in (".md", ".tex", ".csv", ".pdf")}
    images = [p.name for p in files if p.suffix == ".png"]
    return TableSection(table.number, table.title, shown, verdicts, links, images, table.caption)


def compute_text(records: pd.DataFrame) -> str:
    """What the runs behind the report took, per device kind (``RunDir.cost``, the figure --plan shows as
    "took"): device-hours count every GPU (or CPU) a run held."""
    spent = compute(records)
    if spent.empty:
        return ""
    parts = []
    for unit, runs in spent.groupby("unit", sort=True):
        hours = RunCost.hours_text(runs["device_hours"].sum(), unit)
        parts.append(f"{hours} ({len(runs)} runs, {runs['seconds'].sum() / 60:.1f} "
                     f"min: training {runs['train_s'].sum() / 60:.1f}, curves {runs['val_s'].sum() / 60:.1f}, "
                     f"evaluation {runs['eval_s'].sum() / 60:.1f})")
    return " and ".join(parts) + " (from the runs' log.jsonl and metrics.json)"


def noise_text(records: pd.DataFrame, preset: Preset) -> str:
    """Where the training noise in every interval comes from: each claim's own paired seeds, and the prior
    (the preset's, or the report's pooled σ where larger) with the degrees of freedom it may lend."""
    noise = seed_noise(records)
    classes = records.attrs.get("classes", class_names(preset.paper))
    if noise.std is None:
        return ("**Training noise:** no prior: the preset sets no `report.seed_std` and no row has several seeds, "
                "so one-seed rows get no interval and their claims read not resolved (1 seed).")
    diff = noise.diff_std() or 0.0
    rho = "as the preset states" if noise.diff is not None else "the rows' seed effects taken as uncorrelated"
    df = f"{noise.df:g} degrees of freedom" if math.isfinite(noise.df) else "stated as known"
    return (f"**Training noise:** seed s trains every row with seed s, so a Δ is paired on the seeds: its "
            f"training noise is σ_d²/k, σ_d the std of the per-seed differences over the k seeds both rows have, "
            f"from the claim's own seeds combined with the prior σ_d = {diff:.2f} mIoU ({rho}); a row alone uses "
            f"σ = {noise.std:.2f}. Prior: {noise.source} ({df}); it lends at most max(2, own seeds − 1) degrees "
            "of freedom, since one seed cannot check it. Verdicts marked (prior) rest on it alone. A class IoU's "
            f"prior is sqrt({len(classes)}) times it unless measured.")


def covered_text(sections: Sequence[TableSection], preset: Preset) -> str:
    """Which tables the report holds: those of the command that wrote it, whose claims alone it judges."""
    return (f"**Tables covered:** {', '.join(s.heading for s in sections)}, those of the command that wrote this "
            "report: its claims, and Holm's correction across them, are theirs alone "
            f"(`{report_all_command(preset.paper, preset.name)}` reports every table of the paper in one).")


def write_report(out: Path, preset: Preset, sections: Sequence[TableSection], records: pd.DataFrame) -> Path:
    """Write ``out/REPORT.md`` from the tables' sections (see ``table_section``), their verdicts adjusted
    with Holm's correction across all of them."""
    adjusted = iter(adjust([v for s in sections for v in s.verdicts]))
    sections = [replace(s, verdicts=[next(adjusted) for _ in s.verdicts]) for s in sections]
    absolute = preset.absolute
    intro = covered_text(sections, preset) + "\n\n" + f"Preset `{preset.name}`: {preset.description}".strip()
    if not absolute:
        intro += (" The paper's absolute numbers (`value` claims) are not judged on this preset: only "
                  "differences between rows carry over from a reduced setting.")
    intro += "\n\n" + noise_text(records, preset)
    # the forest plot of every claim opens the report
    figure = plot_claims(claim_lines([v for s in sections for v in s.verdicts], absolute), out,
                         "" if absolute else "(value claims, the paper's absolute numbers: judged on preset paper only)")
    text = render_report(preset.name, sections, compute=compute_text(records), intro=intro, absolute=absolute,
                         claims_image=figure[0].name if figure else "",
                         paper="" if preset.paper == DEFAULT_PAPER else load_paper(preset.paper).label)
    path = make_dirs(out) / REPORT
    atomic_write_text(path, text)
    return path
