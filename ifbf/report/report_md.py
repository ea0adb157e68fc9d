"""REPORT.md rendering (pure: data frames and verdicts in, markdown out; nothing is read or written here).

``render_report`` assembles the sections; ``claims_frame`` is the claims table (one row per claim:
statement, paper, ours with its 95% interval, p, raw and Holm-adjusted verdict, seeds, seed std, seeds
for the paper's effect) and ``interval_cells`` the ``95% CI`` column of a mIoU table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from ifbf.experiments import class_names
from ifbf.report.verdicts import NOT_EVALUATED, VERDICTS, Verdict

HOW_TO_READ = """\
**How to read a verdict.** Every interval is a 95% interval holding two kinds of noise: the evaluation
images (a bootstrap that draws the images with replacement and recomputes IoU from the summed pixel
counts; two rows compared share the draws, so what the images have in common cancels) and training. Seed s
trains every row with the same seed, so a Δ is paired on the seeds: its training noise is σ_d²/k, σ_d the
std of the per-seed differences over the k seeds both rows have, from the claim's own seeds combined with
the preset's prior ("seed std": own df + prior df). A verdict marked **(prior)** rests on the prior alone:
its rows have one seed, nothing in them checks σ. A claim is **supported** when our interval of Δ excludes 0
on the side the paper claims, **size off** (paper preset only) when it does but our Δ also differs from the
paper's by more than both noises (ours, and the paper's own one-training draw), **contradicted**
when it excludes 0 on the other side, and **not resolved** when it contains 0 ("not resolved (1 seed)":
σ unknown, no honest interval). "about" claims are two one-sided tests: supported when the 90% interval
lies within the paper's value ± the preset's margin. "Best of" claims compare the claimed row with each
rival: supported when it is resolved above all of them, contradicted when a rival is resolved above it at
the Bonferroni level over the rivals; the interval shown is the one that decides, at its level. "Both depths" claims
hold only when each depth's claim does and are not counted again in the totals. "p" is the two-sided
p-value of the same statistic; "after Holm" corrects for testing all the claims of this report at once.
"seeds for the paper's effect" is the seeds per row at which the paper's size would be resolved with 80%
power (ours: for the size we observe), or why no number of seeds would do. Rows not run are **not
evaluated**."""


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
    caption: str = ""  # how the paper names the table (empty: "Table <number>"; another paper: its label first)

    @property
    def heading(self) -> str:
        return self.caption or f"Table {self.number}"


def _num(value: float | None, signed: bool = False, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def interval_cell(low: float | None, high: float | None, signed: bool = False) -> str:
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "—"
    return f"[{_num(low, signed)}, {_num(high, signed)}]"


def _paper(v: Verdict) -> str:
    claim = v.claim
    if claim.kind == "best_of":
        return f"best (by {claim.size:+.2f} over {claim.runner_up})" if claim.size is not None else "best"
    if claim.kind == "all_of":
        return "each holds"
    if claim.size is None:
        return "> 0" if claim.direction == "higher" else "< 0"
    signed = claim.kind == "delta"
    classes = len(class_names(claim.paper))
    text = _num(claim.size, signed) if claim.kind != "classes" else f"{claim.size:g} of {classes}"
    return f"{text} (> {claim.threshold:g})" if claim.threshold is not None and claim.kind == "value" else text


def _ours(v: Verdict) -> str:
    if v.verdict == NOT_EVALUATED or v.ours is None:
        return "—"
    kind = v.claim.kind
    signed = kind in ("delta", "best_of", "all_of")
    if kind == "classes":
        return f"{v.ours:g} of {len(class_names(v.claim.paper))} {interval_cell(v.low, v.high)}"
    return f"{_num(v.ours, signed)} {interval_cell(v.low, v.high, signed)}"


def _needs(v: Verdict) -> str:
    if v.for_paper is None:
        return ""
    text = v.for_paper.text()
    return text + (f" (ours: {v.for_ours.text()})" if v.for_ours is not None else "")


def _p(value: float | None) -> str:
    if value is None or math.isnan(value):
        return ""
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _verdict(word: str | None) -> str:
    return "" if word is None else word if word == NOT_EVALUATED else f"**{word}**"


def claims_frame(verdicts: Sequence[Verdict], absolute: bool = True) -> pd.DataFrame:
    """One row per claim: statement, paper, ours [95% CI], p raw and after Holm, paper in CI (blank when
    ``absolute`` is False: a preset whose numbers are not the paper's), raw and adjusted verdict, seeds
    behind it, the seed std used, the seeds for the paper's effect, why."""
    records = [{
        "claim": v.claim.id,
        "statement": v.claim.text + (f" ({v.claim.note})" if v.claim.note else ""),
        "paper": _paper(v),
        "ours [95% CI]": _ours(v),
        "p": _p(v.p),
        "p (Holm)": _p(v.p_holm),
        "paper in CI": "" if v.size_inside is None or not absolute else "yes" if v.size_inside else "no",
        "verdict": _verdict(v.label) + (" (prior)" if v.on_prior else ""),
        "after Holm": _verdict(v.adjusted),
        "seeds": "/".join(map(str, v.seeds)),
        "seed std": v.noise.text() if v.noise is not None and v.verdict != NOT_EVALUATED else "",
        "seeds for the paper's effect": _needs(v),
        "why": v.reason,
    } for v in verdicts]
    columns = ["claim", "statement", "paper", "ours [95% CI]", "p", "p (Holm)", "paper in CI", "verdict",
               "after Holm", "seeds", "seed std", "seeds for the paper's effect", "why"]
    return pd.DataFrame.from_records(records, columns=columns)


def verdict_counts(verdicts: Sequence[Verdict], adjusted: bool = False) -> str:
    """"9 supported, 2 size off, ..." over the counted claims (all_of claims follow from others)."""
    words = [(v.adjusted or v.verdict) if adjusted else v.verdict for v in verdicts if v.counted]
    counts = pd.Series(words, dtype=object).value_counts()
    return ", ".join(f"{counts[k]} {k}" for k in VERDICTS if k in counts)


def _summary(verdicts: Sequence[Verdict], absolute: bool) -> list[str]:
    tested = sum(1 for v in verdicts if v.counted and v.p_holm is not None)
    what = "Claims of the paper" if absolute else "Verdicts on this preset (a check of the pipeline, not of the paper)"
    derived = sum(1 for v in verdicts if not v.counted)
    return [f"{what}: {verdict_counts(verdicts)}; after Holm's correction across the {tested} claims tested: "
            f"{verdict_counts(verdicts, adjusted=True)}" + (f" ({derived} 'both depths' claims not counted again)"
                                                             if derived else "") + ".", ""]


def render_report(preset: str, sections: Sequence[TableSection], compute: str = "", intro: str = "",
                  absolute: bool = True, claims_image: str = "", paper: str = "") -> str:
    """The whole REPORT.md: a summary of the verdicts, every claim with its verdict in one table, then per
    table its rows (with intervals), figures and links. ``absolute`` False (a preset that is not the
    paper's): the heading says the verdicts check the pipeline, and "paper in CI" is left blank. ``paper``: the
    paper's label in the heading (left out for the default paper, whose heading is as it always was)."""
    verdicts = [v for s in sections for v in s.verdicts]
    lines = [f"# Reproduction report: {f'{paper}, ' if paper else ''}preset `{preset}`", ""]
    if claims_image:  # the forest plot of every claim opens the report
        lines += [f"![The paper's claims: its number and ours]({claims_image})", "", READ_CLAIMS_FIGURE, ""]
    if not absolute:
        lines += [f"**The verdicts below check the pipeline on preset `{preset}`, not the paper**: its models, "
                  "data and schedule are not the paper's, so only whether the machinery tells effects apart "
                  "carries over.", ""]
    if intro:
        lines += [intro, ""]
    if verdicts:
        lines += _summary(verdicts, absolute)
    if compute:
        lines += [f"Compute spent: {compute}.", ""]
    lines += [HOW_TO_READ, ""]
    if verdicts:  # every claim in one table, before the tables they come from
        claims = claims_frame(verdicts, absolute).to_markdown(index=False, disable_numparse=True)
        lines += ["## The paper's claims", "", claims, ""]
    for section in sections:
        table = section.table.to_markdown(disable_numparse=True)
        lines += [f"## {section.heading}: {section.title}", "", table, ""]
        lines += [f"![{section.heading}: {path}]({path})" for path in section.images]
        lines += [""] if section.images else []
        if section.links:
            lines += [" · ".join(f"[{label}]({path})" for label, path in section.links.items()), ""]
    return "\n".join(lines).rstrip() + "\n"
