"""REPORT.md rendering (pure: data frames and verdicts in, markdown out; nothing is read or written here).

``render_report`` assembles the sections; ``claims_frame`` is the claims table (one row per claim:
statement, paper, ours with its 95% interval, P(Δ ≤ 0), verdict) and ``interval_cells`` the
``95% CI`` column of a mIoU table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from ifbf.report.claims import NOT_EVALUATED, Verdict

HOW_TO_READ = """\
**How to read a verdict.** Intervals are 95% bootstrap intervals over the evaluation images (and over
seeds, when a row has several): a resample draws the images with replacement and recomputes IoU from
the summed pixel counts. A difference Δ between two rows is resampled on the same images, so what the
images have in common cancels. A claim is **supported** when our interval of Δ excludes 0 on the side
the paper claims, **contradicted** when it excludes 0 on the other side, and **not resolved** when it
contains 0: then "seeds" says how many seeds per row would resolve a Δ of the size we observe (80%
power), or that the evaluation images alone are too few. "Best of a sweep" claims use P(best), the
fraction of resamples in which the claimed row has the highest mIoU: supported at ≥ 0.95,
contradicted at ≤ 0.05. "paper in CI" says whether the paper's own number lies inside our interval.
Rows we have not run yet are **not evaluated**."""


READ_CLAIMS_FIGURE = ("One line per claim, grouped by table: the black tick is the paper's number, the point "
                      "and bar ours with its 95% interval, the vertical line no effect; colour, marker and the "
                      "word at the right give the verdict (with the seeds a not-resolved claim needs).")


@dataclass(frozen=True)
class TableSection:
    """One table of the report: its rendered frame (strings), the verdicts on its claims, links."""

    number: int
    title: str
    table: pd.DataFrame
    verdicts: Sequence[Verdict] = ()
    links: Mapping[str, str] = field(default_factory=dict)  # label -> relative path (md, tex, csv, figures)
    images: Sequence[str] = ()  # relative paths of figures shown inline (PNG)


def _num(value: float | None, signed: bool = False, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def interval_cell(low: float | None, high: float | None, signed: bool = False) -> str:
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "—"
    return f"[{_num(low, signed)}, {_num(high, signed)}]"


def interval_cells(df: pd.DataFrame, low: str = "ci_low", high: str = "ci_high") -> list[str]:
    """The ``95% CI`` column of a mIoU table from its interval columns (— where a row has no runs)."""
    return [interval_cell(lo, hi) for lo, hi in zip(df[low], df[high])]


def _paper(v: Verdict) -> str:
    claim = v.claim
    if claim.kind == "best_of":
        return "best"
    if claim.size is None:
        return "> 0" if claim.direction == "higher" else "< 0"
    signed = claim.kind == "delta"
    text = _num(claim.size, signed) if claim.kind != "classes" else f"{claim.size:g} of 19"
    return f"{text} (> {claim.threshold:g})" if claim.threshold is not None and claim.kind == "value" else text


def _ours(v: Verdict) -> str:
    if v.verdict == NOT_EVALUATED or v.ours is None:
        return "—"
    kind = v.claim.kind
    if kind == "best_of":
        best = max(v.best or {}, key=lambda r: (v.best or {})[r], default="")
        text = f"P(best) {v.ours:.2f}"
        return text + (f"; most often best: {best}" if best and best != v.claim.rows[0][0] else "")
    if kind == "classes":
        return f"{v.ours:g} of 19 {interval_cell(v.low, v.high)}"
    return f"{_num(v.ours, signed=kind == 'delta')} {interval_cell(v.low, v.high, signed=kind == 'delta')}"


def _seeds(v: Verdict) -> str:
    if v.verdict != "not resolved" or v.claim.kind not in ("delta", "best_of"):
        return ""
    return str(v.seeds_needed) if v.seeds_needed is not None else "more images"


def claims_frame(verdicts: Sequence[Verdict]) -> pd.DataFrame:
    """One row per claim: id, statement, paper, ours [95% CI], P(Δ ≤ 0), paper in CI, verdict, seeds."""
    records = [{
        "claim": v.claim.id,
        "statement": v.claim.text + (f" ({v.claim.note})" if v.claim.note else ""),
        "paper": _paper(v),
        "ours [95% CI]": _ours(v),
        "P(Δ ≤ 0)": _num(v.p_le_zero) if v.p_le_zero is not None else "",
        "paper in CI": "" if v.size_inside is None else "yes" if v.size_inside else "no",
        "verdict": f"**{v.verdict}**" if v.verdict != NOT_EVALUATED else v.verdict,
        "seeds to resolve": _seeds(v),
        "why": v.reason,
    } for v in verdicts]
    columns = ["claim", "statement", "paper", "ours [95% CI]", "P(Δ ≤ 0)", "paper in CI", "verdict",
               "seeds to resolve", "why"]
    return pd.DataFrame.from_records(records, columns=columns)


def verdict_counts(verdicts: Sequence[Verdict]) -> str:
    counts = pd.Series([v.verdict for v in verdicts], dtype=object).value_counts()
    order = ["supported", "contradicted", "not resolved", NOT_EVALUATED]
    return ", ".join(f"{counts[k]} {k}" for k in order if k in counts)


def render_report(preset: str, sections: Sequence[TableSection], compute: str = "", intro: str = "",
                  claims_image: str = "") -> str:
    """The whole REPORT.md: a summary of the verdicts, every claim with its verdict in one table, then per
    table its rows (with intervals), figures and links."""
    verdicts = [v for s in sections for v in s.verdicts]
    lines = [f"# Reproduction report: preset `{preset}`", ""]
    if claims_image:  # the forest plot of every claim opens the report
        lines += [f"![The paper's claims: its number and ours]({claims_image})", "", READ_CLAIMS_FIGURE, ""]
    if intro:
        lines += [intro, ""]
    if verdicts:
        lines += [f"Claims of the paper: {verdict_counts(verdicts)}.", ""]
    if compute:
        lines += [f"Compute spent: {compute}.", ""]
    lines += [HOW_TO_READ, ""]
    if verdicts:  # every claim in one table, before the tables they come from
        claims = claims_frame(verdicts).to_markdown(index=False, disable_numparse=True)
        lines += ["## The paper's claims", "", claims, ""]
    for section in sections:
        table = section.table.to_markdown(disable_numparse=True)
        lines += [f"## Table {section.number}: {section.title}", "", table, ""]
        lines += [f"![Table {section.number}: {path}]({path})" for path in section.images]
        lines += [""] if section.images else []
        if section.links:
            lines += [" · ".join(f"[{label}]({path})" for label, path in section.links.items()), ""]
    return "\n".join(lines).rstrip() + "\n"
