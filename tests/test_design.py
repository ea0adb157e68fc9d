"""reproduce.py --design [--budget H]: seeds per claim from the stated noise, device-hours from preflight.json,
and what a budget buys."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
from test_adaptive import fake_counts  # the same simulated per-image counts

import ifbf.orchestrate.reproduce as reproduce_module
from ifbf.commands.reproduce import cli
from ifbf.errors import ConfigError
from ifbf.experiments import _report_prior, load_preset, load_table, row_config
from ifbf.orchestrate.cluster import load_profile
from ifbf.orchestrate.design import (IMAGE_SE_PAPER, ClaimDesign, Contrast, allocate, contrasts, design,
                                     flops_hours, measure_noise, training_cost)
from ifbf.orchestrate.plan import build_plan
from ifbf.orchestrate.preflight import group_shapes, preflight_path, val_setting
from ifbf.identity import eval_key
from ifbf.report.claims import load_claims
from ifbf.report.power import SeedsNeeded
from ifbf.report.student import t_quantile

CLAIMS = load_claims(2)
TESTED = sum(c.kind != "all_of" for c in CLAIMS)  # the family the level is split over


PRIOR = load_preset("paper").report
DIFF_STD = math.sqrt(2) * PRIOR.seed_std  # σ_d prior: the rows' seed effects taken as uncorrelated


def seeds_by_search(size: float, image_se: float, diff_std: float, alpha: float, prior_df: float) -> int | None:
    """Written apart from power.py: the first S at which |size| reaches (q_{1-α/2} + q_{0.8}) se, each q the
    variance-weighted mix of the normal and t quantiles at the df of σ_d with S paired seeds (the prior's, at
    most max(2, S - 1), plus S - 1): the report's test, with the t approximation of the noncentral t."""
    for s in range(1, 1001):
        image_var, seed_var = image_se**2, diff_std**2 / s
        df = min(prior_df, max(2, s - 1)) + s - 1

        def q(p: float) -> float:
            return (image_var * NormalDist().inv_cdf(p) + seed_var * t_quantile(p, df)) / (image_var + seed_var)

        if abs(size) >= (q(1 - alpha / 2) + q(0.8)) * math.sqrt(image_var + seed_var):
            return s
    return None


def _lines(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines() if line.startswith("  t2-")}


def test_table2_design_without_preflight(tmp_path, capsys):
    # no preflight.json: each row priced from its own FLOPs, at the low end of the utilisation (the high price)
    ranges = flops_hours([load_table(2)], load_preset("paper"), load_profile("example"), tmp_path, ())
    one_pass = sum(h for _, h in ranges.values())
    assert 5 < one_pass < 40  # a lab's budget: the one-seed pass and the big effects fit in 40 GPU-hours
    budget = one_pass + 18  # the one-seed pass and 18 GPU-hours for the claims (40 in all for Table 2's ten rows)
    assert cli(["--table", "2", "--design", "--budget", f"{budget:.6f}", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = _lines(out)
    assert set(lines) == {c.id for c in CLAIMS}
    alpha = 0.05 / TESTED
    assert f"0.05/{TESTED} = {alpha:.4f}" in out and "Bonferroni" in out
    assert f"{DIFF_STD:.2f} mIoU (prior of preset paper" in out
    rows = len(load_table(2).runnable())
    assert f"{rows} of {rows} row(s) priced from the model's own FLOPs" in out and "run --preflight" in out
    low, high = min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values())
    assert f"{low:.2f}-{high:.2f} device-hours a row" in out and high / low > 4  # 40 % vs 10 %, R50 vs R101
    for claim_id, size in [("t2-aspp-r50", 2.80), ("t2-skip-r50", 2.06), ("t2-fusion-r101", 1.19)]:
        claim = next(c for c in CLAIMS if c.id == claim_id)
        expected = seeds_by_search(size, IMAGE_SE_PAPER, DIFF_STD, alpha, PRIOR.seed_std_df)
        cost = expected * sum(ranges[(2, r[0])][1] for r in claim.rows)
        assert re.search(rf"\s{expected}\s+{cost:.2f}\*", lines[claim_id]), lines[claim_id]
    assert "image noise alone exceeds the effect" in lines["t2-spatial-r101"]  # +0.11: at no budget
    assert "no effect to detect" in lines["t2-poles"]
    assert "cannot allocate" not in out
    assert f"one seed of each of {rows} rows costs {one_pass:.2f} ({rows} at the assumed cost)" in out
    assert re.findall(r"^\s+resolvable\s+(\S+)", out, re.M)[:2] == ["t2-full-r50", "t2-full-r101"]
    assert not (tmp_path / "paper").exists()  # nothing written, nothing trained


def test_training_flops_match_a_real_forward():
    """The meta-device count of one training image is 3 x the forward of the real model in training mode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ifbf.models import build_model
    from ifbf.models.cost import training_flops

    cfg = dataclasses.replace(row_config(load_table(2).runnable()[-1], load_preset("smoke")).model, norm="bn")
    model = build_model(cfg).train()
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(2, 3, 64, 96))
    assert training_flops(cfg, (64, 96)) == pytest.approx(3 * counter.get_total_flops() / 2, rel=1e-9)


def test_design_without_preflight_or_assumed_cost_says_so(tmp_path, capsys, monkeypatch):
    paper = load_preset("paper")
    no_cost = dataclasses.replace(paper, report=dataclasses.replace(paper.report, training_hours=None,
                                                                    peak_tflops=None, utilisation=None))
    monkeypatch.setattr(reproduce_module, "load_preset", lambda name, paper="ifbfnet": no_cost)
    assert cli(["--table", "2", "--design", "--budget", "40", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = len(load_table(2).runnable())
    assert f"{rows} of {rows} row(s) without a figure: run --preflight" in out
    assert re.search(r"\s\d+\s+run --preflight", _lines(out)["t2-full-r50"])
    assert "cannot allocate without the cost of every row" in out and "ASSUMED" not in out


def test_preset_cost_assumption_is_checked():
    path = Path("experiments/ifbfnet/presets/bad.yaml")
    for value, message in [(0, "report.training_hours must be > 0"), ("many", "are numbers")]:
        with pytest.raises(ConfigError, match=message):
            _report_prior({"training_hours": value}, path)
    with pytest.raises(ConfigError, match="training_hours, training_hours_source"):
        _report_prior({"gpu_hours": 3}, path)  # a misspelt key is named with the ones that exist
    assert _report_prior({"training_hours": 2.5}, path).training_hours == 2.5
    for bad in ({"peak_tflops": 989}, {"peak_tflops": 989, "utilisation": [0.4, 0.1]},
                {"peak_tflops": 989, "utilisation": [0, 0.4]}, {"utilisation": [0.1, 0.4]}):
        with pytest.raises(ConfigError, match="utilisation"):
            _report_prior(bad, path)


def fake_preflight(results, s_per_it: float) -> float:
    """preflight.json for every shape of table 2 on the paper preset, training only (evaluations free):
    returns the device-hours of one training."""
    plan = build_plan([load_table(2)], load_preset("paper"), 1, results)
    profile = load_profile("example")
    shapes = {}
    for key, shape in group_shapes(plan, profile).items():
        evals = {k: {"s_per_img": 0.0} for k in shape.evals} | {eval_key(val_setting(shape.cfg)): {"s_per_img": 0.0}}
        shapes[key] = {"setup_s": 0.0, "s_per_it": {"median": s_per_it}, "eval": evals, "date": "2026-12-01",
                       "device": "NVIDIA H100", "ckpt_s": 0.0}
    path = preflight_path(results, "paper")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"shapes": shapes}))
    cfg = next(iter(plan.trainings.values())).cfg
    return s_per_it * cfg.train.iters * max(1, profile.gpus_per_node) / 3600


def test_table2_design_with_preflight_and_budget(tmp_path, capsys):
    hours = fake_preflight(tmp_path, 0.5)
    rows = len(load_table(2).runnable())
    budget = rows * hours + 20 * hours  # the one-seed pass and 20 more trainings
    assert cli(["--table", "2", "--design", "--budget", f"{budget:.6f}", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = _lines(out)
    alpha = 0.05 / TESTED
    seeds = seeds_by_search(2.80, IMAGE_SE_PAPER, DIFF_STD, alpha, PRIOR.seed_std_df)
    assert f"{2 * seeds * hours:.2f}" in lines["t2-aspp-r50"]  # two rows at that many seeds
    bought = re.findall(r"resolvable\s+(\S+)", out)
    # t2-full-* (the largest Δs) need the fewest seeds; next the "greatly improved over Baseline 2" claim at R50
    # (+3.83: fewer seeds than ASPP's +2.80); the rows it bought make R50's ASPP claim cheap next; R101's ASPP
    # pair (its rows then cost more seeds than are left) is out of reach
    assert bought[:3] == ["t2-full-r50", "t2-full-r101", "t2-over-aspp-r50"]
    assert "t2-aspp-r101" not in bought
    assert re.search(r"out of reach\s+t2-spatial-r101.*image noise alone exceeds the effect", out)
    assert f"one seed of each of {rows} rows costs {rows * hours:.2f}" in out


def test_allocation_buys_the_cheap_claims_and_shares_rows():
    cheap = ClaimDesign(CLAIMS[0], ((Contrast(2, "x", "y", 1.0), 0.1, SeedsNeeded(3)),))
    costly = ClaimDesign(CLAIMS[1], ((Contrast(2, "y", "z", 1.0), 0.1, SeedsNeeded(10)),))
    never = ClaimDesign(CLAIMS[2], ((Contrast(2, "x", "z", 0.1), 0.5, SeedsNeeded(None, "image noise")),))
    hours = {(2, "x"): 1.0, (2, "y"): 1.0, (2, "z"): 2.0}
    small = allocate([costly, never, cheap], hours, budget=10)
    assert [d.claim.id for d, _ in small.bought] == [cheap.claim.id]
    assert small.seeds == {(2, "x"): 3, (2, "y"): 3, (2, "z"): 1} and small.spent == 4 + 4
    assert {d.claim.id for d, _ in small.out_of_reach} == {costly.claim.id, never.claim.id}
    big = allocate([costly, never, cheap], hours, budget=40)
    # y already has 3 seeds bought for the cheap claim: the costly one adds 7 on y and 9 x 2 h on z
    assert [cost for _, cost in big.bought] == [4, 7 + 18] and big.seeds[(2, "z")] == 10
    assert [d.claim.id for d, _ in big.out_of_reach] == [never.claim.id]


def test_claims_become_paired_deltas():
    table = load_table(2)
    by_id = {c.id: c for c in CLAIMS}
    both, _ = contrasts(by_id["t2-spatial-both"], table)
    paper = {r.name: r.paper.get("miou") for r in table.rows}
    assert [(c.a, c.b) for c in both] == [("R50 IFBFNet", "R50 + ASPP + skip + fusion"),
                                          ("R101 IFBFNet", "R101 + ASPP + skip + fusion")]
    assert [c.size for c in both] == [pytest.approx(paper[c.a] - paper[c.b]) for c in both]
    best, _ = contrasts(by_id["t2-best"], table)
    assert [(c.a, c.b) for c in best] == [("R101 IFBFNet", r) for r in by_id["t2-best"].rivals]  # named in the spec
    assert [c.size for c in best] == [pytest.approx(paper[c.a] - paper[c.b]) for c in best]
    for number in (1, 4, 5, 6):  # value and classes claims are no Δ between rows: listed, not designed
        for claim in load_claims(number):
            if claim.kind in ("value", "classes"):
                found, note = contrasts(claim, load_table(number))
                assert found == () and note.startswith("not designed")


def test_measured_noise_replaces_the_assumption():
    rng = np.random.default_rng(1)
    union = rng.integers(200, 1000, size=(30, 19))
    base = rng.normal(0, 0.1, size=union.shape)
    rows = {name: [fake_counts(rng, base, union, 60.0, 2.0) for _ in range(3)]
            for name in ("R50 + ASPP", "R50 BaseNet")}
    noise = measure_noise({2: rows}, [load_table(2)], load_preset("paper"), 30)
    per_seed = {name: [100 * float(np.nanmean(c.inter.sum(0) / c.union.sum(0))) for c in seeds]
                for name, seeds in rows.items()}
    d = np.subtract(per_seed["R50 + ASPP"], per_seed["R50 BaseNet"])  # the one contrast with paired seeds
    # the best estimate to plan with: the prior (2 df) and the measurement (2 df), weighted by their df
    nu = PRIOR.seed_std_df
    assert noise.diff_std == pytest.approx(np.sqrt((nu * DIFF_STD**2 + 2 * np.var(d, ddof=1)) / (nu + 2)))
    assert noise.prior_df == PRIOR.seed_std_df  # the report's verdicts still lend the prior its own df
    assert "measured on 1 paired contrast" in noise.seed_source and "measured on 1 pair" in noise.image_basis
    (ds,) = design([(next(c for c in CLAIMS if c.id == "t2-aspp-r50"), load_table(2))], noise, 0.05)
    assert ds.contrasts[0][1] == noise.measured_image_se[(2, "R50 + ASPP", "R50 BaseNet")] > 0


def test_rows_that_share_a_training_pay_for_it_once():
    """Two rows of one config (another table's copy, an inference-only row) share every seed's training: a plan
    of 3 seeds for one and 5 for the other trains 5, not 8; a claim over both needs no second training."""
    hours = {(1, "A"): 1.0, (2, "A again"): 1.0, (1, "C"): 2.0}
    same = {(1, "A"): (1, "A"), (2, "A again"): (1, "A"), (1, "C"): (1, "C")}
    seeds = {(1, "A"): 3, (2, "A again"): 5, (1, "C"): 1}
    assert training_cost(seeds, hours) == 3 + 5 + 2  # as if apart
    assert training_cost(seeds, hours, same) == 5 + 2


def test_design_prices_the_trainings_a_plan_runs(tmp_path, capsys):
    """DANet's Tables 1 and 2: 12 rows, 10 trainings (Table 2's first row is Table 1's R101 DANet, its MS row an
    evaluation of the MG row's training): --design's one-seed pass costs the plan's trainings, not its rows."""
    tables = [load_table(n, "danet") for n in (1, 2)]
    smoke = load_preset("smoke", "danet")
    trainings = len(build_plan(tables, smoke, 1, tmp_path).trainings)
    rows = sum(len(t.runnable()) for t in tables)
    assert (rows, trainings) == (12, 10)
    assert cli(["--paper", "danet", "--table", "all", "--preset", "smoke", "--design", "--budget", "100",
                "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    cost = trainings * smoke.report.training_hours
    assert f"one seed of each of {rows} rows ({trainings} trainings: rows of one config share theirs) costs " \
           f"{cost:.2f} " in out


def test_a_finished_rows_cost_is_what_the_report_counts(tmp_path, capsys):
    """A finished CPU run of 2 CPUs: --design's one-seed pass reads RunDir.cost (36 s x 2 CPUs = 0.02
    CPU-hours), the figure REPORT.md and --plan show, not its wall-hours (0.01)."""
    from fakeruns import confusions, finish_run
    from ifbf.store.rundir import RunDir, RunState, write_status

    table, smoke = load_table(1, "danet"), load_preset("smoke", "danet")
    plan = build_plan([table], smoke, 1, tmp_path / "danet")
    for training in plan.trainings.values():
        rd = finish_run(training, confusions(np.full((4, 19), 0.5), np.full((4, 19), 100, dtype=np.int64)))
        rd.log.write_text(json.dumps({"iter": training.cfg.train.iters, "step_s": 36.0}) + "\n")
        (training.run_dir / "checkpoint.pth").write_bytes(b"")
        write_status(training.run_dir, RunState.DONE, cpus=2)
        assert RunDir(training.run_dir).cost().device_hours == pytest.approx(0.02)
    assert cli(["--paper", "danet", "--table", "1", "--preset", "smoke", "--design", "--budget", "5", "--results",
                str(tmp_path)]) == 0
    assert f"one seed of each of {len(plan.trainings)} rows costs {0.02 * len(plan.trainings):.2f};" in \
        capsys.readouterr().out
