"""REPORT.md rendering: the claims table and the report's sections, from verdicts and frames."""

from __future__ import annotations

import pandas as pd

from ifbf.report.claims import Verdict, load_claims
from ifbf.report.report_md import TableSection, claims_frame, interval_cells, render_report

CLAIMS = {c.id: c for c in load_claims(2)}


def verdicts() -> list[Verdict]:
    return [
        Verdict(CLAIMS["t2-skip-r50"], "supported", 12.345, 10.5, 14.25, 0.0, False, reason=""),
        Verdict(CLAIMS["t2-spatial-r101"], "not resolved", 0.05, -0.4, 0.5, 0.41, True, 37, reason="37 seeds"),
        Verdict(CLAIMS["t2-fusion-r50"], "not evaluated", reason="no per-image counts for R50 + ASPP + skip"),
        Verdict(CLAIMS["t2-best"], "contradicted", 0.01, -3.0, -1.0, best={"R101 IFBFNet": 0.01, "R50 IFBFNet": 0.99}),
    ]


def test_claims_frame_cells():
    df = claims_frame(verdicts()).set_index("claim")
    assert df.loc["t2-skip-r50", "paper"] == "+2.06"
    assert df.loc["t2-skip-r50", "ours [95% CI]"] == "+12.35 [+10.50, +14.25]"
    assert df.loc["t2-skip-r50", "paper in CI"] == "no" and df.loc["t2-skip-r50", "verdict"] == "**supported**"
    assert df.loc["t2-spatial-r101", "seeds to resolve"] == "37" and df.loc["t2-spatial-r101", "P(Δ ≤ 0)"] == "0.41"
    assert df.loc["t2-fusion-r50", "ours [95% CI]"] == "—" and df.loc["t2-fusion-r50", "verdict"] == "not evaluated"
    assert "text says 2.43%" in df.loc["t2-fusion-r50", "statement"]
    assert df.loc["t2-best", "ours [95% CI]"] == "P(best) 0.01; most often best: R50 IFBFNet"


def test_report_has_every_section_and_claim():
    table = pd.DataFrame({"paper mIoU": ["73.82"], "ours mIoU": ["70.00"]}, index=pd.Index(["R50 BaseNet"], name="row"))
    text = render_report("smoke", [TableSection(2, "Ablation", table, verdicts(), {"csv": "table2.csv"})],
                         compute="0.1 CPU-hours")
    assert text.startswith("# Reproduction report: preset `smoke`")
    assert "1 supported, 1 contradicted, 1 not resolved, 1 not evaluated" in text
    assert "## Table 2: Ablation" in text and "[csv](table2.csv)" in text and "0.1 CPU-hours" in text
    for claim_id in ("t2-skip-r50", "t2-spatial-r101", "t2-fusion-r50", "t2-best"):
        assert f"| {claim_id} " in text


def test_interval_cells():
    df = pd.DataFrame({"ci_low": [79.123, float("nan")], "ci_high": [81.0, float("nan")]})
    assert interval_cells(df) == ["[79.12, 81.00]", "—"]
