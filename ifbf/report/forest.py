"""Forest plots: one line per claim (``claims.png``) or per ablation step (``table<N>_delta.png``), the
paper's number as a black tick, ours as a point with its 95% interval, against a vertical line at no
effect. A reader sees at a glance which effects reproduce; differences of 0.1–3 points, invisible next to
bars of 75–81, get the whole axis.

The figures are drawn from :class:`ClaimLine`, a plain record; ``claim_lines`` is the one adapter from the
verdicts of ``report.claims`` and ``step_lines`` computes the steps of a table (``adds_to`` in its spec).
Verdicts are told apart by colour (Okabe–Ito, safe for colour-blind readers), by marker and by the word
written at the right, so the figure also reads in grey scale. Pure: a matplotlib ``Figure`` out, no pyplot
state; ``report.figures`` saves it.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ifbf.errors import IfbfError
from ifbf.experiments import TableSpec, class_names, table_caption
from ifbf.report.stats import RESAMPLES, Row, SeedNoise, set_difference
from ifbf.report.verdicts import NOT_EVALUATED, NOT_RESOLVED, Verdict
from ifbf.store.runtypes import score_label


def delta_axis(metric: str) -> str:
    """The axis of a difference in ``metric`` (a ``runtypes.SCORES`` key): "Δ mIoU (points)"."""
    return f"Δ {score_label(metric)} (points)"


def is_delta(axis: str) -> bool:
    """An axis of differences (``delta_axis``): its panel marks no effect at 0."""
    return axis.startswith("Δ ")


DELTA, VALUE, CLASSES = delta_axis("miou"), "mIoU (%)", "classes won (count)"  # a line's axis (its unit)


@dataclass(frozen=True)
class Style:
    colour: str
    marker: str
    filled: bool = True


# One style per verdict word: colour (Okabe–Ito), marker and fill differ, so grey scale keeps them apart.
STYLES: dict[str, Style] = {
    "supported": Style("#009E73", "o"),
    "contradicted": Style("#D55E00", "X"),
    "size off": Style("#E69F00", "D"),
    "not resolved": Style("#0072B2", "s", filled=False),
    "not evaluated": Style("#888888", "o", filled=False),
}
PLAIN = Style("#0072B2", "o")  # a line without a verdict (an ablation step)
UNKNOWN = Style("#444444", "^", filled=False)  # a verdict word this module does not know yet
LABEL_WIDTH = 44  # characters per line of a claim's label
FONT = 8  # points; the claims figure is 8.7 in wide: about 6 pt on a 6.5 in text column


@dataclass(frozen=True)
class ClaimLine:
    """One line of a forest plot (every number in the unit of ``axis``)."""

    table: int
    label: str  # the claim's short statement, or an ablation step
    paper: float | None  # the paper's Δ / value; None: the paper gives no number
    ours: float | None  # None: not evaluated, or only an interval is known
    low: float | None  # 95% interval of ours
    high: float | None
    verdict: str = ""  # a word of STYLES; "" for a line without a verdict
    note: str = ""  # written after the verdict: the seeds a not-resolved claim needs, the verdict after Holm
    axis: str = DELTA  # DELTA (or another metric's ``delta_axis``), VALUE or CLASSES: one panel per axis
    null: float | None = None  # no effect on this line's axis when it is not 0 (a threshold)
    caption: str = ""  # the table's heading in a grouped figure ("" : "Table <table>"; another paper's: its label)


def short_label(text: str) -> str:
    """A claim's statement without its trailing "(section; number)": the numbers are on the axis."""
    return re.sub(r"\s*\([^()]*\)\s*$", "", text).strip() or text


def _note(v: Verdict) -> str:
    """What follows the verdict word: why a claim is not resolved (the seeds the paper's effect needs, or
    why no number of seeds would do) and the verdict after Holm's correction where it differs."""
    notes = []
    if v.verdict == NOT_RESOLVED:
        notes.append("1 seed, σ unknown" if v.label != v.verdict else v.for_paper.text() if v.for_paper else "")
    if v.adjusted is not None and v.adjusted != v.verdict:
        notes.append(f"after Holm: {v.adjusted}")
    return " · ".join(n for n in notes if n)


def _line(v: Verdict) -> ClaimLine:
    claim = v.claim
    label = short_label(claim.text) + (f" ({claim.metric} IoU)" if claim.metric != "miou" else "")
    line = ClaimLine(claim.table, label, claim.size, v.ours, v.low, v.high, v.verdict, _note(v),
                     caption=table_caption(claim.table, claim.paper))
    if claim.kind == "best_of":  # ours: Δ to the deciding rival; paper: margin over its runner-up
        return replace(line, label=label + ": margin over the next best")
    if claim.kind == "value":
        return replace(line, axis=VALUE, null=claim.threshold)
    if claim.kind == "classes":  # the null of the verdicts: half of the classes
        half = len(class_names(claim.paper)) / 2
        return replace(line, axis=CLASSES, null=claim.threshold if claim.threshold is not None else half)
    return line


def claim_lines(verdicts: Sequence[Verdict], absolute: bool = True) -> list[ClaimLine]:
    """The adapter from ``claims.Verdict``: one line per claim, in the given order. ``absolute=False`` (a
    preset that does not judge the paper's absolute numbers) leaves the ``value`` claims out."""
    return [_line(v) for v in verdicts if absolute or v.claim.kind != "value"]


def step_lines(table: TableSpec, counts: Mapping[str, Row], noise: SeedNoise, resamples: int = RESAMPLES,
               metric: str = "miou") -> list[ClaimLine]:
    """Each ablation step of ``table`` (a row with ``adds_to``) in ``metric`` (``counts`` scored by it, ``noise``
    its seed noise): Δ = row − the row it adds to, the paper's (None where it gives no value) and ours with its
    paired 95% interval (None where a side has no per-image counts)."""
    paper = {r.name: r.paper.get(metric) for r in table.rows}
    lines = []
    for row in table.runnable():
        if row.adds_to is None:
            continue
        a, b = paper.get(row.name), paper.get(row.adds_to)
        ours = low = high = None
        if counts.get(row.name) and counts.get(row.adds_to):
            try:
                diff = set_difference([counts[row.name]], [counts[row.adds_to]], noise, resamples)
                ours, low, high = diff.estimate, diff.low, diff.high
            except IfbfError:  # evaluated on different images: no paired Δ
                pass
        lines.append(ClaimLine(table.number, f"{row.adds_to} → {row.name}",
                               None if a is None or b is None else a - b, ours, low, high, axis=delta_axis(metric)))
    return lines


def _rows(lines: Sequence[ClaimLine], grouped: bool) -> list[tuple[float, str, ClaimLine | None]]:
    """(y, tick label, line) top to bottom; with ``grouped`` a "Table N" heading (line None) opens each table."""
    rows: list[tuple[float, str, ClaimLine | None]] = []
    table = None
    for line in lines:
        if grouped and line.table != table:
            rows.append((-len(rows), line.caption or f"Table {line.table}", None))
            table = line.table
        rows.append((-len(rows), textwrap.fill(line.label, LABEL_WIDTH), line))
    return rows


def _style(line: ClaimLine) -> Style:
    return STYLES.get(line.verdict, UNKNOWN) if line.verdict else PLAIN


def _draw_line(ax: Axes, y: float, line: ClaimLine) -> None:
    style = _style(line)
    if line.low is not None and line.high is not None:
        mid = line.ours if line.ours is not None else (line.low + line.high) / 2
        ax.errorbar([mid], [y], xerr=[[mid - line.low], [line.high - mid]], fmt="none", ecolor=style.colour,
                    elinewidth=1.6, capsize=3, zorder=2)
    if line.ours is not None:
        # filled markers get a white rim, so their shape stands out from the bar and caps under them
        ax.plot([line.ours], [y], ls="none", marker=style.marker, ms=8.5, color=style.colour,
                mec="white" if style.filled else style.colour, mfc=style.colour if style.filled else "white",
                mew=0.8 if style.filled else 1.6, zorder=3, gid="ours")
    if line.null is not None:  # this line's own "no effect" (a threshold), where the panel has no line at 0
        ax.vlines(line.null, y - 0.35, y + 0.35, colors="0.35", linestyles=":", lw=1.2, zorder=1)
    if line.paper is not None:
        ax.plot([line.paper], [y], ls="none", marker="|", ms=13, mew=2.2, color="black", zorder=4, gid="paper")


def _draw_panel(ax: Axes, rows: list, axis: str) -> None:
    for y, _, line in rows:
        if line is not None:
            _draw_line(ax, y, line)
    if is_delta(axis):
        ax.axvline(0, color="0.25", lw=0.9, zorder=1)
    ax.set_yticks([y for y, _, _ in rows], [label for _, label, _ in rows], fontsize=FONT)
    for tick, (_, _, line) in zip(ax.get_yticklabels(), rows):
        if line is None:
            tick.set_fontweight("bold")
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(rows[-1][0] - 0.6, 0.6)
    ax.set_xlabel(axis, fontsize=FONT)
    ax.tick_params(axis="x", labelsize=FONT)
    ax.grid(axis="x", color="0.9", lw=0.6)
    ax.set_axisbelow(True)


def _verdict_column(side: Axes, rows: list, heading: bool) -> None:
    """The verdict word (and its note) at the right of each line, in the verdict's colour."""
    side.set_axis_off()
    side.set_xlim(0, 1)
    if heading:
        side.set_title("verdict", fontsize=FONT, loc="left")
    for y, _, line in rows:
        if line is not None and line.verdict:
            text = line.verdict + (f" · {line.note}" if line.note else "")
            side.text(0, y, text, color=_style(line).colour, fontsize=FONT, fontweight="bold", va="center",
                      gid="verdict")


def _legend(fig: Figure, lines: Sequence[ClaimLine], ours: str) -> None:
    handles = [Line2D([], [], ls="none", marker="|", ms=10, mew=2, color="black", label="paper")]
    words = [w for w in STYLES if any(line.verdict == w for line in lines)]
    styles = [(w, STYLES[w]) for w in words] if words else [(ours, PLAIN)]
    handles += [Line2D([], [], ls="-", lw=1.4, marker=s.marker, ms=6, color=s.colour, mec=s.colour,
                       mfc=s.colour if s.filled else "white", label=w if words else ours)
                for w, s in styles if w != NOT_EVALUATED]
    if NOT_EVALUATED in words:  # nothing of ours is drawn on such a line: no marker to explain
        handles.append(Line2D([], [], ls="none", marker="None", label=f"{NOT_EVALUATED}: the paper's tick only"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=FONT, frameon=False)


def forest_figure(lines: Sequence[ClaimLine], title: str, grouped: bool = True, ours: str = "ours, 95% CI",
                  footnote: str = "") -> Figure:
    """One panel per axis (Δ first; absolute values and class counts below), lines top to bottom in the
    given order, headed by their table when ``grouped``; a verdict column when the lines have verdicts."""
    axes = dict.fromkeys([DELTA, *(line.axis for line in lines if is_delta(line.axis)), VALUE, CLASSES])
    panels = [(axis, _rows(ls, grouped)) for axis in axes if (ls := [line for line in lines if line.axis == axis])]
    if not panels:
        raise ValueError("a forest plot needs at least one line")
    verdicts = any(line.verdict for line in lines)
    heights = [len(rows) + 1.2 for _, rows in panels]
    fig = Figure(figsize=(8.5 if verdicts else 7.0, 0.34 * sum(heights) + 1.0), layout="constrained")
    grid = fig.add_gridspec(len(panels), 2 if verdicts else 1, height_ratios=heights,
                            width_ratios=[3.0, 1.25] if verdicts else [1.0])
    for i, (axis, rows) in enumerate(panels):
        ax = fig.add_subplot(grid[i, 0])
        _draw_panel(ax, rows, axis)
        if verdicts:
            _verdict_column(fig.add_subplot(grid[i, 1], sharey=ax), rows, heading=i == 0)
    fig.suptitle(title + (f"\n{footnote}" if footnote else ""), fontsize=FONT + 1)
    _legend(fig, lines, ours)
    return fig
