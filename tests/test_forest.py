"""The forest plots (ifbf/report/forest.py): drawn from verdicts judged on constructed per-image counts with
known effects, and from hand-made lines carrying every verdict word; read back through the figure's text
objects (tick labels, the verdict column, the legend), never its pixels. Also: ``adds_to`` in the table
specs and the legends of the figures sitting outside the axes."""

from __future__ import annotations

import textwrap
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ifbf.config import ConfigError, read_yaml
from ifbf.experiments import load_preset, load_table, table_path
from ifbf.report import figures, records
from ifbf.report.claims import load_claims
from ifbf.report.power import IMAGE_NOISE, SeedsNeeded
from ifbf.report.stats import SeedNoise
from ifbf.report.verdicts import Verdict, judge_all
from ifbf.report.forest import CLASSES, DELTA, LABEL_WIDTH, STYLES, VALUE, ClaimLine, claim_lines, forest_figure, \
    short_label, step_lines
from ifbf.report.report_file import write_report
from ifbf.report.report_md import TableSection
from ifbf.report.stats import Counts, miou

N_IMAGES, K = 40, 19
# IoU level of Table 2's rows: the skip connection adds 20 points, fusion at R101 loses 10, the rest nothing
# (a row not named here: 0.40)
LEVEL = {
    "R50 + ASPP + skip": 0.60, "R50 + ASPP + skip + fusion": 0.60, "R50 IFBFNet": 0.60, "R101 + ASPP + skip": 0.60,
    "R101 + ASPP + skip + fusion": 0.50, "R101 IFBFNet": 0.50,
}
# 20 points where the paper has about 2: the right direction, but the size is off
KNOWN = {"t2-skip-r50": "size off", "t2-skip-r101": "size off", "t2-skip-both": "size off",
         "t2-fusion-r101": "contradicted", "t2-full-r50": "size off", "t2-best": "contradicted"}


def NOISE(metric: str) -> SeedNoise:  # training noise the constructed counts are judged with
    return SeedNoise(0.5)


@pytest.fixture(scope="module")
def table2_counts() -> dict[str, list[Counts]]:
    rng = np.random.default_rng(0)
    names = tuple(f"img{i}" for i in range(N_IMAGES))
    rows = {}
    for row in (r.name for r in load_table(2).runnable()):
        level = LEVEL.get(row, 0.40)
        union = rng.integers(500, 1500, size=(N_IMAGES, K))
        share = np.clip(level + rng.normal(0, 0.05, size=(N_IMAGES, K)), 0, 1)
        rows[row] = [Counts.of((union * share).astype(np.int64), union.astype(np.int64), names)]
    return rows


def _texts(fig: Figure, gid: str) -> list[Text]:
    """The figure's text objects with ``gid``, panel by panel, top to bottom."""
    return [t for ax in fig.axes for t in sorted(ax.texts, key=lambda t: -t.get_position()[1]) if t.get_gid() == gid]


def _labels(fig: Figure) -> list[tuple[str, str]]:
    """(label, weight) of every y tick of the data panels, panel by panel, top to bottom."""
    return [(t.get_text(), t.get_fontweight()) for ax in fig.axes if ax.axison for t in ax.get_yticklabels()]


def test_claims_figure_from_known_verdicts(table2_counts):
    claims = load_claims(2)
    verdicts = judge_all(claims, table2_counts, NOISE, resamples=2000)
    assert {v.claim.id: v.verdict for v in verdicts if v.claim.id in KNOWN} == KNOWN  # the constructed effects
    fig = forest_figure(claim_lines(verdicts), "claims")
    assert _labels(fig) == [("Table 2", "bold")] + [
        (textwrap.fill(short_label(c.text) + (f" ({c.metric} IoU)" if c.metric != "miou" else "")
                       + (": margin over the next best" if c.kind == "best_of" else ""), LABEL_WIDTH), "normal")
        for c in claims]  # one line per claim, in the spec's order
    words = [t.get_text().split(" · ")[0] for t in _texts(fig, "verdict")]
    assert words == [v.verdict for v in verdicts]
    drawn = [ln.get_gid() for ax in fig.axes for ln in ax.get_lines()]
    assert drawn.count("paper") == sum(c.size is not None for c in claims)
    assert drawn.count("ours") == sum(v.ours is not None for v in verdicts)  # best_of: Δ to its strongest rival


def test_every_verdict_word_on_its_panel():
    lines = [ClaimLine(1, "absolute value", 81.2, 80.0, 79.0, 81.0, "supported", axis=VALUE),
             ClaimLine(2, "an effect that held", 2.0, 1.5, 0.5, 2.5, "supported"),
             ClaimLine(2, "an effect the other way", 2.0, -1.0, -2.0, -0.2, "contradicted"),
             ClaimLine(2, "right side, wrong size", 0.3, 9.0, 7.0, 11.0, "size off"),
             ClaimLine(2, "too noisy to tell", 1.0, 0.2, -1.0, 1.4, "not resolved", note="12 seeds"),
             ClaimLine(4, "a row we have not run", 1.5, None, None, None, "not evaluated"),
             ClaimLine(1, "most classes", 15, 12, 10, 14, "supported", axis=CLASSES, null=9.5)]
    fig = forest_figure(lines, "every verdict")
    assert [ax.get_xlabel() for ax in fig.axes if ax.axison] == [DELTA, VALUE, CLASSES]
    assert _labels(fig) == [("Table 2", "bold"), ("an effect that held", "normal"),
                            ("an effect the other way", "normal"), ("right side, wrong size", "normal"),
                            ("too noisy to tell", "normal"), ("Table 4", "bold"), ("a row we have not run", "normal"),
                            ("Table 1", "bold"), ("absolute value", "normal"), ("Table 1", "bold"),
                            ("most classes", "normal")]
    column = [t.get_text() for t in _texts(fig, "verdict")]
    assert column[:5] == ["supported", "contradicted", "size off", "not resolved · 12 seeds", "not evaluated"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert all(any(text.startswith(w) for text in legend) for w in STYLES)  # every verdict explained
    assert len({(s.marker, s.filled) for s in STYLES.values()}) == len(STYLES)  # told apart without colour


def test_value_claims_left_out_where_not_judged():
    verdicts = judge_all(load_claims(6), {}, NOISE)  # no runs: not evaluated
    assert [line.axis for line in claim_lines(verdicts)] == [VALUE, VALUE, DELTA]
    assert [line.label for line in claim_lines(verdicts, absolute=False)] == [
        "IFBFNet beats the replicated DeepLabV3+ on test by 1.1 mIoU"]


def test_steps_of_table2(table2_counts):
    rows = {r["name"]: r for r in read_yaml(table_path(2))["rows"]}
    lines = step_lines(load_table(2), table2_counts, NOISE("miou"), resamples=2000)
    steps = [(name, r["adds_to"]) for name, r in rows.items() if "adds_to" in r]
    assert [line.label for line in lines] == [f"{parent} → {row}" for row, parent in steps]
    paper = {name: r["paper"].get("miou") for name, r in rows.items()}
    for line, (row, parent) in zip(lines, steps):
        if paper[row] is None or paper[parent] is None:
            assert line.paper is None  # a step the paper does not give
        else:
            assert line.paper == pytest.approx(paper[row] - paper[parent])
        a, b = (table2_counts[r][0] for r in (row, parent))
        assert line.ours == pytest.approx(miou(a.inter.sum(0), a.union.sum(0)) - miou(b.inter.sum(0), b.union.sum(0)))
        assert line.low < line.ours < line.high
    assert [line.ours for line in step_lines(load_table(2), {}, NOISE("miou"))] == [None] * len(steps)  # paper only


def test_adds_to_names_a_row(tmp_path, monkeypatch):
    spec = read_yaml(table_path(4))
    spec["rows"][1]["adds_to"] = "no such row"
    path = tmp_path / "table4.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    monkeypatch.setattr("ifbf.experiments.table_path", lambda number, paper="ifbfnet": path)
    with pytest.raises(ConfigError, match="adds_to 'no such row' must name another runnable row"):
        load_table(4)


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_nothing_overlaps_and_legends_sit_outside(table2_counts, monkeypatch, tmp_path):
    drawn: list[Figure] = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or [])
    verdicts = judge_all(load_claims(2), table2_counts, NOISE, resamples=2000)
    figures.plot_claims(claim_lines(verdicts), tmp_path)
    table = load_table(2)
    df = pd.DataFrame({"paper": [r.paper.get("miou", np.nan) for r in table.runnable()], "ours": 50.0, "std": np.nan},
                      index=[r.name for r in table.runnable()])
    figures.plot_ablation(df, table, tmp_path, "smoke")
    for fig in drawn:
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        data = [ax for ax in fig.axes if ax.axison]
        for legend in fig.legends + [ax.get_legend() for ax in data if ax.get_legend()]:
            box = legend.get_window_extent(renderer)
            assert not any(_overlap(box, ax.get_window_extent(renderer)) for ax in data)
        texts = [t for ax in data for t in ax.get_yticklabels()] + _texts(fig, "verdict")
        boxes = [t.get_window_extent(renderer) for t in texts if t.get_text()]
        assert not [pair for pair in combinations(boxes, 2) if _overlap(*pair)]


def test_report_opens_with_the_forest_plot(table2_counts, tmp_path):
    preset = load_preset("smoke")
    frame = records.collect([load_table(2)], preset, 1, tmp_path)  # no runs: the steps are the paper's only
    verdicts = judge_all(load_claims(2), table2_counts, NOISE, resamples=2000)
    out = tmp_path / "smoke"
    path = write_report(out, preset, [TableSection(2, "Table 2", pd.DataFrame(), verdicts)], frame)
    lines = path.read_text().splitlines()
    assert lines[:3] == ["# Reproduction report: preset `smoke`", "",
                         "![The paper's claims: its number and ours](claims.png)"]
    assert lines.index("## The paper's claims") > 3
    assert (out / "claims.png").is_file() and (out / "claims.pdf").is_file()
    steps = figures.plot_steps(frame, load_table(2), out, "smoke")
    assert steps == [out / "table2_delta.png", out / "table2_delta.pdf"]
    assert figures.plot_steps(frame, load_table(3), out, "smoke") == []  # a sweep: no adds_to


def test_adapter_notes_and_axes():
    claims = {c.id: c for n in (1, 2) for c in load_claims(n)}
    lines = claim_lines([
        Verdict(claims["t2-aspp-r50"], "not resolved", 0.5, -0.5, 1.5, for_paper=SeedsNeeded(12)),
        Verdict(claims["t2-best"], "not resolved", 0.4, -0.3, 0.9, for_paper=SeedsNeeded(None, IMAGE_NOISE)),
        Verdict(claims["t1-most-classes"], "supported", 14, 12, 16, adjusted="not resolved"),
    ])
    assert [line.note for line in lines] == ["12 seeds per row", IMAGE_NOISE, "after Holm: not resolved"]
    assert [line.axis for line in lines] == [DELTA, DELTA, CLASSES]
    assert lines[1].ours == 0.4 and (lines[1].low, lines[1].high) == (-0.3, 0.9)  # Δ to the strongest rival
    paper = {r.name: r.paper.get("miou") for r in load_table(2).rows}
    runner_up = max(paper[r] for r in claims["t2-best"].rivals)
    assert lines[1].paper == pytest.approx(paper["R101 IFBFNet"] - runner_up)  # 81.16 - 81.05
