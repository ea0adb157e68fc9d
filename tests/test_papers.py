"""Papers as folders of specs (experiments/<paper>/): the default paper keeps every name it had, another paper's
tables, presets, results and labels are its own, and the generic code names no paper."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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
