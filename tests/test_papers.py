"""Papers as folders of specs (experiments/<paper>/): the default paper keeps every name it had, another paper's
tables, presets, results and labels are its own, and the generic code names no paper."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from fakeruns import finish_smoke_table
from ifbf.config import BASE_CONFIG, ConfigError
from ifbf.experiments import (DEFAULT_PAPER, EXPERIMENTS, load_paper, load_preset, load_table, papers, results_of,
                              row_label, table_cells)

PACKAGE = Path(__file__).resolve().parents[1] / "ifbf"
GENERIC = ("orchestrate", "report", "engine", "store")


def test_the_default_paper_keeps_its_names(tmp_path):
    assert DEFAULT_PAPER == "ifbfnet" and BASE_CONFIG == EXPERIMENTS / "ifbfnet" / "base.yaml"
    assert results_of(tmp_path) == tmp_path  # results/<preset>/ as before
    assert row_label(2, "R50 BaseNet") == "T2 R50 BaseNet" and load_table(2).caption == "Table 2"
    cells = table_cells(load_table(3), load_preset("smoke"), 1)
    assert cells and all(c.label.startswith("T3 ") and c.paper == DEFAULT_PAPER for c in cells)


def test_every_paper_folder_is_complete():
    """Each folder with a paper.yaml has a base recipe, presets whose rows resolve, and tables whose specs load."""
    assert DEFAULT_PAPER in papers()
    for name in papers():
        paper = load_paper(name)
        assert paper.base.is_file() and paper.tables and len(paper.classes) > 1
        for number in paper.tables:
            table = load_table(number, name)
            assert table.paper == name and table.runnable()
            cells = table_cells(table, load_preset("smoke", name), 1)
            assert {c.row.name for c in cells} == {r.name for r in table.runnable()}


def test_unknown_papers_and_tables_are_named_with_what_exists():
    with pytest.raises(ConfigError, match=r"unknown paper 'nope' \(known: .*ifbfnet"):
        load_paper("nope")
    with pytest.raises(ConfigError, match=r"unknown table 9 of IFBFNet: its tables are 1, 2, 3, 4, 5, 6"):
        load_table(9)


def test_a_preset_and_a_table_of_different_papers_do_not_mix():
    others = [p for p in papers() if p != DEFAULT_PAPER]
    if not others:
        pytest.skip("only one paper")
    other = load_paper(others[0])
    with pytest.raises(ConfigError, match="is .*'s, table"):
        table_cells(load_table(other.tables[0], other.name), load_preset("smoke"), 1)


# names of one paper: its model, its six tables, its 19 classes
PAPER_NAMES = re.compile(r"ifbfnet|\b19\b|\btables? [1-6]\b|\bsix tables\b|sqrt\(19\)", re.IGNORECASE)


def test_generic_code_names_no_paper():
    """orchestrate/, report/, engine/ and store/ serve any paper: none of them names IFBFNet, its tables or the
    19 Cityscapes classes (a paper's names live in experiments/<paper>/ and models/)."""
    assert PAPER_NAMES.search("from ifbf.models.ifbfnet import X") and PAPER_NAMES.search("the 19 classes")
    offenders = [f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
                 for part in GENERIC for path in sorted((PACKAGE / part).rglob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1) if PAPER_NAMES.search(line)]
    assert not offenders, "\n".join(offenders)


def test_another_papers_own_tables_render_under_its_folder(tmp_path):
    """--paper danet --paper-only: DANet's tables with its own values, in results/danet/paper-only/, captioned
    with its name; the default paper's folder stays untouched."""
    from ifbf.commands.reproduce import cli

    assert cli(["--paper", "danet", "--table", "1", "--paper-only", "--results", str(tmp_path)]) == 0
    md = (tmp_path / "danet" / "paper-only" / "table1.md").read_text()
    assert md.startswith("# DANet Table 1:")
    for row in load_table(1, "danet").rows:
        assert f"| {row.paper['miou']:.2f}" in md, row.name
    assert not (tmp_path / "paper-only").exists()


def test_another_papers_plan_names_its_rows_and_their_weights(tmp_path, capsys):
    """The paper preset of DANet refuses to plan without each depth's ImageNet weights, naming its rows as
    DANet's (not as the default paper's "T1 ...")."""
    from ifbf.commands.reproduce import cli

    assert cli(["--paper", "danet", "--table", "1", "--plan", "--executor", "local", "--results",
                str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no ImageNet weights for resnet101 (DANet T1 R101" in err and "no ImageNet weights for resnet50" in err
    assert "Traceback" not in err


# DANet's smoke preset, shortened: 6 iterations on 8 images (the preset's own schedule is timed in the docs)
DANET_TINY = ["data.synth.train=8", "data.synth.val=4", "data.synth.test=2", "train.iters=6",
              "train.warmup_iters=2", "runtime.ckpt_every=3", "runtime.log_every=3", "runtime.val_images=2"]


def test_another_papers_table_runs_end_to_end(tmp_path, capsys):
    """--paper danet --table 1 --preset smoke --executor local: every row trained and evaluated, its table,
    figures and REPORT.md (a verdict per claim) in results/danet/smoke/, headed with the paper's name."""
    from ifbf.commands.reproduce import cli
    from ifbf.report.claims import load_claims

    table = load_table(1, "danet")
    args = ["--paper", "danet", "--table", "1", "--preset", "smoke", "--executor", "local", "--results",
            str(tmp_path), "--set", *DANET_TINY]
    assert cli(args) == 0
    out = tmp_path / "danet" / "smoke"
    frame = pd.read_csv(out / "table1.csv", index_col=0)
    assert list(frame.index) == [r.name for r in table.rows]
    assert frame["ours"].between(0, 100).all() and (frame["ci_low"] <= frame["ours"]).all()
    assert frame["paper"].tolist() == [r.paper["miou"] for r in table.rows]
    for name in ("table1.md", "table1.tex", "table1_bars.png", "table1_delta.png", "table1_loss.png", "claims.png"):
        assert (out / name).is_file(), name
    report = (out / "REPORT.md").read_text()
    assert report.startswith("# Reproduction report: DANet, preset `smoke`")
    claim_rows = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| danet-")}
    assert set(claim_rows) == {c.id for c in load_claims(1, "danet")}
    assert all(re.search(r"\*\*(supported|not resolved|contradicted|size off)", line) for line in claim_rows.values())
    assert not (tmp_path / "smoke").exists()  # the default paper's folder untouched
    # runs are found again by the same command: nothing to train the second time
    capsys.readouterr()
    assert cli(args) == 0
    assert f"{len(table.runnable())} training(s): {len(table.runnable())} done, 0 to run" in capsys.readouterr().out


@pytest.fixture()
def full_size_frames(tmp_path, monkeypatch):
    """A Cityscapes-layout root with one full-size train and val frame, posing as a real (partial) one."""
    from ifbf.data.synth import SynthSpec, write_dataset

    root = write_dataset(tmp_path / "cityscapes", SynthSpec(train=1, val=1, test=0, height=1024, width=2048))
    (root / "SYNTHETIC.json").unlink()
    monkeypatch.setenv("CITYSCAPES_DATASET", str(root))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return root


def test_another_papers_plan_passes_its_checks_and_prices_every_row(tmp_path, capsys, full_size_frames):
    """DANet's paper preset with torchvision-layout ResNet-50/101 files: --plan passes every check and prices
    each row from its own FLOPs (the design's figures), before any GPU measured it."""
    import torch

    from ifbf._torchvision import torchvision
    from ifbf.commands.reproduce import cli
    from ifbf.orchestrate.cluster import load_profile
    from ifbf.orchestrate.design import flops_hours

    files = {}
    for depth in ("resnet50", "resnet101"):
        files[depth] = tmp_path / f"{depth}.pth"
        torch.save(getattr(torchvision.models, depth)(weights=None).state_dict(), files[depth])
    args = ["--paper", "danet", "--table", "1", "--plan", "--executor", "local", "--allow-partial-dataset",
            "--results", str(tmp_path / "r"), "--weights", *(f"{k}={v}" for k, v in files.items())]
    # the paper's batch of 8 is 2 per GPU on 4 GPUs: one local process would train a batch of 2
    assert cli(args) == 2
    assert "global batch of 8" in capsys.readouterr().err
    assert cli([*args, "--profile-set", "gpus_per_node=4"]) == 0
    out = capsys.readouterr().out
    table = load_table(1, "danet")
    ranges = flops_hours([table], load_preset("paper", "danet"), load_profile("local", ["gpus_per_node=4"]),
                         tmp_path / "r", ())
    for row in table.runnable():
        low, high = ranges[(1, row.name)]
        line = next(line for line in out.splitlines() if f" DANet T1 {row.name}  ~" in line)
        assert f"~{low:.2f}-{high:.2f} device-hours (training steps from FLOPs at an ASSUMED 10%-40%" in line
        assert high == pytest.approx(4 * low)  # 10 % vs 40 % of the same peak
    # each attention module costs FLOPs on top of its dilated FCN, and depth costs more than either
    fcn, pam, dual = (ranges[(1, f"R50 {name}")][0] for name in ("Dilated FCN", "+ PAM", "DANet"))
    assert fcn < pam < dual and ranges[(1, "R101 Dilated FCN")][0] > fcn
    total = f"{sum(r[0] for r in ranges.values()):.1f}-{sum(r[1] for r in ranges.values()):.1f} device-hours"
    assert f"to run, not measured: {len(ranges)} training(s), {total}" in out


def test_another_papers_design_names_its_rows(tmp_path, capsys):
    """--design --budget prices and allocates DANet's rows, naming them as DANet's where it buys seeds."""
    from ifbf.commands.reproduce import cli

    assert cli(["--paper", "danet", "--table", "1", "--preset", "smoke", "--design", "--budget", "10", "--results",
                str(tmp_path)]) == 0
    seeds = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("Seeds per row: "))
    bought = re.findall(r"(?:^Seeds per row: |, )([^:,]+): (\d+)", seeds)
    assert bought and all(name.startswith("DANet T1 ") and int(n) > 1 for name, n in bought), seeds


def test_results_readmes_are_built_from_the_specs():
    """results/README.md and results/danet/README.md (committed) are what the generator writes; another paper's
    is headed with its folder and names its --paper flag, its own tables' files, and the docs one folder further
    up."""
    from ifbf.report.readme import results_readme

    repo = PACKAGE.parent
    assert (repo / "results" / "README.md").read_text() == results_readme()
    own = results_readme("danet")
    assert (repo / "results" / "danet" / "README.md").read_text() == own
    assert results_readme().startswith("# results/\n") and own.startswith("# results/danet/\n")
    assert "reproduce.py --paper danet --table all" in own and "(../../docs/verdicts.md" in own
    assert "`<preset>/table1_delta.{png,pdf}`, `<preset>/table2_delta.{png,pdf}`" in own and "table6" not in own
    assert "| `danet/` | DANet's results (`--paper danet`)" in results_readme() and "`danet/`" not in own


def test_cost_measures_the_chosen_papers_base_and_names_it(capsys):
    """ifbf cost --paper danet (no --config): DANet's base.yaml, named in the output; a --config is named by
    its path."""
    from ifbf.commands.cli import main

    assert main(["cost", "--paper", "danet", "--size", "32", "64", "--repeat", "1", "model.backbone=resnet18"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model       danet, resnet18 (experiments/danet/base.yaml: DANet's base + 1 override)")
    assert main(["cost", "--config", str(BASE_CONFIG), "--size", "32", "64", "--repeat", "1",
                 "model.backbone=resnet18", "model.spatial_stream=false"]) == 0
    assert "ifbfnet, resnet18 (experiments/ifbfnet/base.yaml: IFBFNet's base + 2 overrides)" in capsys.readouterr().out


def test_another_papers_cost_table_is_headed_with_its_name(tmp_path):
    """ifbf cost --paper danet --table 2: results/danet/<preset>/cost_table2.md, headed "DANet Table 2", its
    footnote true of a model without balance weights nor an S1 aux head."""
    from ifbf.commands.cli import main

    assert main(["cost", "--paper", "danet", "--table", "2", "--preset", "smoke", "--size", "32", "64",
                 "--latency-size", "32", "64", "--repeat", "1", "--results", str(tmp_path)]) == 0
    text = (tmp_path / "danet" / "smoke" / "cost_table2.md").read_text()
    assert text.startswith(f"# Cost of DANet Table 2's rows: {load_table(2, 'danet').title}\n")
    assert "balance weights where the model has them" in text and "aux head excluded" not in text


def test_a_switch_another_arch_reads_names_the_papers_that_build_it():
    """model.aspp on DANet's rows (or model.pam on IFBFNet's): refused, naming the paper whose base.yaml builds
    an arch that reads it; a switch of no other paper's arch names none."""
    danet, default = load_paper("danet"), load_paper()
    with pytest.raises(ConfigError, match=rf"use model\.arch=ifbfnet \({default.label}'s tables: --paper "
                                          rf"{DEFAULT_PAPER}\)$"):
        table_cells(load_table(1, "danet"), load_preset("smoke", "danet"), 1, ("model.aspp=false",))
    with pytest.raises(ConfigError, match=rf"use model\.arch=danet \({danet.label}'s tables: --paper danet\)$"):
        table_cells(load_table(2), load_preset("smoke"), 1, ("model.pam=false",))
    with pytest.raises(ConfigError, match=r"model\.arch=deeplabv3plus does not read it; drop the override or use "
                                          r"model\.arch=ifbfnet$"):  # Table 1's DeepLabV3+ rows: IFBFNet's own arch
        table_cells(load_table(1), load_preset("smoke"), 1, ("model.skip=false",))


def test_the_help_and_an_unknown_table_name_the_papers(tmp_path, capsys):
    """reproduce.py --help gives each paper's weights and results folder, ifbf --help says which papers it
    reproduces, and an unknown table is answered with the other papers' tables."""
    from ifbf.commands.cli import build_parser as ifbf_parser
    from ifbf.commands.reproduce import build_parser, cli

    help_text = " ".join(build_parser().format_help().split())
    assert "IFBFNet's paper preset's: resnet101_deep=" in help_text
    assert "DANet's (--paper danet): resnet101=PATH resnet50=PATH" in help_text
    assert "results/<preset>/preflight.json (another paper's: results/<paper>/<preset>/)" in help_text
    top = " ".join(ifbf_parser([]).format_help().split())
    assert all(f"{load_paper(p).label} " in top for p in papers()) and "--paper danet" in top
    assert cli(["--paper", "danet", "--table", "3", "--results", str(tmp_path)]) == 2
    tables = ", ".join(map(str, load_paper().tables))
    assert f"DANet's tables are 1, 2; other papers: --paper {DEFAULT_PAPER} (tables {tables})" in capsys.readouterr().err


def _refused(args: list[str], capsys) -> str:
    """The one line reproduce.py exits 2 with."""
    from ifbf.commands.reproduce import cli

    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_a_results_folder_one_level_too_deep_is_refused_before_planning(tmp_path, capsys):
    """--results given as a paper's own folder (results/danet/, whose runs would be looked for in
    results/danet/danet/) or as a preset's folder (results/smoke/, results/danet/smoke/): one line naming the
    folder to give, nothing planned or written; the results folder itself finds every finished run."""
    from ifbf.commands.reproduce import cli

    n = finish_smoke_table(tmp_path, 1, "danet")
    finish_smoke_table(tmp_path, 3)
    before = sorted(tmp_path.rglob("*"))
    danet = ["--paper", "danet", "--table", "1", "--preset", "smoke", "--status", "--results"]
    err = _refused([*danet, str(tmp_path / "danet")], capsys)
    assert f"--results {tmp_path / 'danet'} is DANet's own results folder" in err
    assert f"give its parent: --results {tmp_path}" in err
    err = _refused([*danet, str(tmp_path / "danet" / "smoke")], capsys)
    assert "is a preset's folder (it holds runs/)" in err and err.endswith(f"--results {tmp_path}\n")
    err = _refused(["--table", "3", "--preset", "smoke", "--plan", "--results", str(tmp_path / "smoke")], capsys)
    assert "is a preset's folder (it holds runs/)" in err and err.endswith(f"--results {tmp_path}\n")
    err = _refused(["--table", "3", "--preset", "smoke", "--plan", "--results", str(tmp_path / "danet")], capsys)
    assert "is DANet's own results folder" in err  # the default paper's runs do not belong there either
    assert sorted(tmp_path.rglob("*")) == before
    assert cli([*danet, str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{n} training(s): {n} done;")


def test_a_results_folder_named_after_a_paper_is_one_when_it_holds_that_papers_folder(tmp_path, capsys):
    """A results folder may itself be called danet/: with danet/danet/ inside (or no runs yet), it is no paper's
    own folder."""
    from ifbf.commands.reproduce import cli

    results = tmp_path / "danet"
    n = finish_smoke_table(results, 1, "danet")
    assert cli(["--paper", "danet", "--table", "1", "--preset", "smoke", "--status", "--results", str(results)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{n} training(s): {n} done;")


def test_a_report_names_its_tables_and_the_others_with_results(tmp_path, capsys):
    """--table 1 then --table 2: REPORT.md holds Table 2's claims only, says so in its intro, and the command
    names Table 1 (its runs finished in the same folder) with the command that reports both; that command's
    REPORT.md holds both and prints no note."""
    from ifbf.commands.reproduce import cli
    from ifbf.report.claims import load_claims

    finish_smoke_table(tmp_path, 1, "danet")
    finish_smoke_table(tmp_path, 2, "danet")
    rows = len(load_table(1, "danet").runnable())
    args = ["--paper", "danet", "--preset", "smoke", "--report-only", "--results", str(tmp_path), "--table"]
    assert cli([*args, "2"]) == 0
    out = capsys.readouterr().out
    command = f"`python reproduce.py --paper danet --table all --preset smoke --report-only --results {tmp_path}`"
    # R101 DANet is Table 2's first row too: its result is in this report already, so 7 of Table 1's 8 are new
    assert f"note: REPORT.md covers DANet Table 2 only; DANet Table 1 ({rows - 1} of {rows} rows) also has results " \
           f"here: {command} reports every table in one" in out.splitlines()
    report = (tmp_path / "danet" / "smoke" / "REPORT.md").read_text()
    assert "**Tables covered:** DANet Table 2, those of the command that wrote this report" in report
    claims = {line.split("|")[1].strip() for line in report.splitlines() if line.startswith("| danet-")}
    assert claims == {c.id for c in load_claims(2, "danet")}  # Table 2's claims, judged as before
    assert cli([*args, "all"]) == 0
    assert "note:" not in capsys.readouterr().out
    report = (tmp_path / "danet" / "smoke" / "REPORT.md").read_text()
    assert "**Tables covered:** DANet Table 1, DANet Table 2, those" in report


def test_rows_shared_with_the_reported_tables_are_no_other_results(tmp_path, capsys):
    """IFBFNet's Table 2 alone (the README's main job): Tables 1, 3, 4 and 5 repeat some of its rows, whose
    results the report holds already, so no note names them."""
    from ifbf.commands.reproduce import cli

    finish_smoke_table(tmp_path, 2)
    assert cli(["--table", "2", "--preset", "smoke", "--report-only", "--results", str(tmp_path)]) == 0
    assert "note:" not in capsys.readouterr().out
