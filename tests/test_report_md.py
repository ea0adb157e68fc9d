"""REPORT.md rendering: the claims table and the report's sections, from verdicts and frames."""

from __future__ import annotations

import pandas as pd

from ifbf.report.claims import load_claims
from ifbf.report.power import IMAGE_NOISE, SeedsNeeded
from ifbf.report.report_md import TableSection, claims_frame, interval_cell, render_report
from ifbf.report.stats import SeedNoise
from ifbf.report.verdicts import UNKNOWN_STD, Verdict

CLAIMS = {c.id: c for c in load_claims(2)}
MEASURED = SeedNoise(1.234, df=22, source="own 3 seeds with the prior", rows=10, own_df=2)  # the claim's own seeds


def verdicts() -> list[Verdict]:
    return [
        Verdict(CLAIMS["t2-skip-r50"], "size off", 12.345, 10.5, 14.25, 0.0004, "size off", 0.004, False,
                seeds=(3, 3), noise=MEASURED, for_paper=SeedsNeeded(4), for_ours=SeedsNeeded(1)),
        Verdict(CLAIMS["t2-spatial-r101"], "not resolved", 0.05, -0.4, 0.5, 0.41, "not resolved", 1.0, True,
                seeds=(1, 1), noise=SeedNoise(1.0), for_paper=SeedsNeeded(None, IMAGE_NOISE)),
        Verdict(CLAIMS["t2-fusion-r50"], "not evaluated", adjusted="not evaluated",
                reason="no per-image counts for R50 + ASPP + skip"),
        Verdict(CLAIMS["t2-best"], "contradicted", -2.0, -3.0, -1.0, 0.01, "not resolved", 0.08, seeds=(1,) * 10,
                noise=SeedNoise(1.0)),
        Verdict(CLAIMS["t2-skip-both"], "size off", 12.345, 10.5, 14.25, 0.0004, "size off", noise=MEASURED),
        Verdict(CLAIMS["t2-aspp-r50"], "not resolved", 1.0, noise=SeedNoise(None), reason=UNKNOWN_STD,
                adjusted="not resolved"),
    ]


def test_claims_frame_cells():
    df = claims_frame(verdicts()).set_index("claim")
    skip = df.loc["t2-skip-r50"]
    assert skip["paper"] == "+2.06" and skip["ours [95% CI]"] == "+12.35 [+10.50, +14.25]"
    assert skip["paper in CI"] == "no" and skip["verdict"] == "**size off**" and skip["after Holm"] == "**size off**"
    assert skip["p"] == "< 0.001" and skip["p (Holm)"] == "0.004" and skip["seeds"] == "3/3"
    assert skip["seed std"] == "1.23 own 2 df + prior (df 20)"  # df 22 in all: 2 own, 20 lent by the prior
    assert skip["seeds for the paper's effect"] == "4 seeds per row (ours: 1 seed per row)"
    spatial = df.loc["t2-spatial-r101"]
    assert spatial["seeds for the paper's effect"] == IMAGE_NOISE and spatial["p"] == "0.410"
    assert spatial["seed std"] == "1.00 prior"
    assert spatial["verdict"] == "**not resolved** (prior)"  # one seed: the verdict rests on the prior alone
    assert df.loc["t2-fusion-r50", "ours [95% CI]"] == "—" and df.loc["t2-fusion-r50", "verdict"] == "not evaluated"
    assert "text says 2.43%" in df.loc["t2-fusion-r50", "statement"]
    best = df.loc["t2-best"]
    assert best["paper"] == "best (by +0.11 over R101 + ASPP + skip + fusion)"
    assert best["verdict"] == "**contradicted** (prior)" and best["after Holm"] == "**not resolved**"
    assert df.loc["t2-aspp-r50", "verdict"] == "**not resolved (1 seed)**"
    assert claims_frame(verdicts(), absolute=False).set_index("claim").loc["t2-skip-r50", "paper in CI"] == ""


def test_report_has_every_section_and_claim():
    table = pd.DataFrame({"paper mIoU": ["73.82"], "ours mIoU": ["70.00"]}, index=pd.Index(["R50 BaseNet"], name="row"))
    text = render_report("smoke", [TableSection(2, "Ablation", table, verdicts(), {"csv": "table2.csv"})],
                         compute="0.1 CPU-hours", absolute=False)
    assert text.startswith("# Reproduction report: preset `smoke`")
    assert "check the pipeline on preset `smoke`, not the paper" in text
    # the totals leave out the all_of claim (t2-skip-both) and count raw and adjusted verdicts
    assert "1 size off, 1 contradicted, 2 not resolved, 1 not evaluated; after Holm's correction across the " \
           "3 claims tested: 1 size off, 3 not resolved, 1 not evaluated (1 'both depths' claims" in text
    assert "## Table 2: Ablation" in text and "[csv](table2.csv)" in text and "0.1 CPU-hours" in text
    for claim_id in ("t2-skip-r50", "t2-spatial-r101", "t2-fusion-r50", "t2-best", "t2-skip-both"):
        assert f"| {claim_id} " in text
    assert "Claims of the paper" in render_report("paper", [TableSection(2, "Ablation", table, verdicts())])


def test_interval_cell():
    assert [interval_cell(79.123, 81.0), interval_cell(float("nan"), float("nan"))] == ["[79.12, 81.00]", "—"]
