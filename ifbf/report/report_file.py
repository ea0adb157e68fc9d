"""``results/<preset>/REPORT.md``: every table's rows with their 95% intervals beside the paper's values,
the paper's claims with verdicts, the figures, the compute spent and links to the table files.

Reads nothing but the records frame (``report.records``); the statistics are ``report.stats`` /
``report.claims`` and the markdown ``report.report_md``. Each claim's bootstrap draws the images of its
rows afresh from one fixed seed, so the verdicts are reproducible run to run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ifbf.errors import IfbfError
from ifbf.experiments import Preset, TableSpec
from ifbf.report.claims import NOT_EVALUATED, Claim, Verdict, judge, load_claims
from ifbf.report.records import compute, row_counts
from ifbf.report.report_md import TableSection, render_report
from ifbf.report.stats import RESAMPLES
from ifbf.report.tables import display, miou_frame
from ifbf.rundir import RunCost

REPORT = "REPORT.md"
ABSOLUTE_PRESETS = frozenset({"paper"})  # presets whose absolute numbers can be held against the paper's


def judge_safely(claim: Claim, counts: dict, absolute: bool, resamples: int = RESAMPLES) -> Verdict:
    """``claims.judge``, or not evaluated (with the reason) when the rows' counts cannot be compared (e.g.
    evaluated on different images): one bad claim never stops the report."""
    try:
        return judge(claim, counts, resamples, absolute=absolute)
    except IfbfError as err:
        return Verdict(claim, NOT_EVALUATED, reason=str(err))


def table_section(records: pd.DataFrame, table: TableSpec, paths: Sequence[Path], out: Path, preset: Preset,
                  resamples: int = RESAMPLES) -> TableSection:
    """One table of REPORT.md: its runnable rows (paper, ours, 95% CI, Δ, seeds), its claims judged from
    the rows' per-image counts, its figures and links to its md/tex/csv."""
    shown = display(miou_frame(records, table, table.runnable(), switches=False))
    counts = row_counts(records, table.number)
    absolute = preset.name in ABSOLUTE_PRESETS
    verdicts = [judge_safely(claim, counts, absolute, resamples) for claim in load_claims(table.number)]
    files = [p for p in paths if p.parent == out]
    links = {p.name: p.name for p in files if p.suffix in (".md", ".tex", ".csv", ".pdf")}
    images = [p.name for p in files if p.suffix == ".png"]
    return TableSection(table.number, table.title, shown, verdicts, links, images)


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


def write_report(out: Path, preset: Preset, sections: Sequence[TableSection], records: pd.DataFrame) -> Path:
    """Write ``out/REPORT.md`` from the tables' sections (see ``table_section``)."""
    intro = f"Preset `{preset.name}`: {preset.description}".strip()
    if preset.name not in ABSOLUTE_PRESETS:
        intro += (" The paper's absolute numbers (`value` claims) are not judged on this preset: only "
                  "differences between rows carry over from a reduced setting.")
    text = render_report(preset.name, sections, compute=compute_text(records), intro=intro)
    path = out / REPORT
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
