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
from ifbf.report.figures import plot_claims
from ifbf.report.forest import claim_lines
from ifbf.report.records import compute, row_counts
from ifbf.report.report_md import TableSection, render_report
from ifbf.report.stats import RESAMPLES
from ifbf.report.tables import display, miou_frame

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
    """The training time of the runs behind the report, per device kind (GPU-hours count every GPU)."""
    spent = compute(records)
    if spent.empty:
        return ""
    parts = []
    gpu = spent[spent["device"] == "gpu"]
    if len(gpu):
        parts.append(f"{(gpu['seconds'] * gpu['world']).sum() / 3600:.2f} GPU-hours ({len(gpu)} runs)")
    cpu = spent[spent["device"] != "gpu"]
    if len(cpu):
        parts.append(f"{cpu['seconds'].sum() / 3600:.3f} CPU-hours of wall-clock ({len(cpu)} runs, "
                     f"{cpu['seconds'].sum() / 60:.1f} min)")
    return (" and ".join(parts) + " of training, from the runs' log.jsonl (iterations x batch / images per "
            "second; evaluation time not counted)")


def write_report(out: Path, preset: Preset, sections: Sequence[TableSection], records: pd.DataFrame) -> Path:
    """Write ``out/REPORT.md`` from the tables' sections (see ``table_section``)."""
    intro = f"Preset `{preset.name}`: {preset.description}".strip()
    if preset.name not in ABSOLUTE_PRESETS:
        intro += (" The paper's absolute numbers (`value` claims) are not judged on this preset: only "
                  "differences between rows carry over from a reduced setting.")
    absolute = preset.name in ABSOLUTE_PRESETS  # the forest plot of every claim opens the report
    figure = plot_claims(claim_lines([v for s in sections for v in s.verdicts], absolute), out,
                         "" if absolute else "(value claims, the paper's absolute numbers: judged on preset paper only)")
    text = render_report(preset.name, sections, compute=compute_text(records), intro=intro,
                         claims_image=figure[0].name if figure else "")
    path = out / REPORT
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
