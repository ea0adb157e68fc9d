"""DANet's specs (experiments/danet/) resolve through the generic code: base.yaml spells out every key, every row
of Tables 1 and 2 under both presets loads with ``load_config`` and builds its model, the claims parse with
``ifbf.report.claims`` and their sizes are the deltas of the paper's rows."""

from __future__ import annotations

import pytest
import torch
import yaml

from ifbf import experiments
from ifbf.config import Config, load_config, to_dict
from ifbf.identity import config_hash
from ifbf.models import build_model
from ifbf.report.claims import load_claims

DANET = experiments.EXPERIMENTS / "danet"
DANET_PAPER = "danet"


def _keys(tree: dict, prefix: str = "") -> set[str]:
    return {k for name, value in tree.items()
            for k in (_keys(value, f"{prefix}{name}.") if isinstance(value, dict) else {f"{prefix}{name}"})}


def test_base_yaml_spells_out_every_key():
    raw = yaml.safe_load((DANET / "base.yaml").read_text())
    assert _keys(raw) == _keys(to_dict(Config()))
    cfg = load_config(DANET / "base.yaml")
    m, d, t = cfg.model, cfg.data, cfg.train
    assert (m.arch, m.output_stride, m.pam, m.cam, m.multi_grid, m.norm) == ("danet", 8, True, True, None, "syncbn")
    assert (d.crop_size, d.scales, d.batch_size, d.hflip) == ((768, 768), (1.0,), 2, True)
    assert (t.lr, t.momentum, t.weight_decay, t.poly_power, t.warmup_iters) == (0.01, 0.9, 1e-4, 0.9, 0)
    assert t.iters == 180 * (2975 // 8)  # 180 epochs of batches of 8, the last partial batch dropped


def test_presets_and_tables_load():
    assert experiments.presets(DANET_PAPER) == ["paper", "smoke"]
    assert [len(experiments.load_table(n, DANET_PAPER).rows) for n in (1, 2)] == [8, 4]
    smoke = experiments.load_preset("smoke", DANET_PAPER)
    assert smoke.backbone_map == {"resnet50": "resnet18", "resnet101": "resnet34"}


@pytest.mark.parametrize("number", [1, 2])
def test_every_smoke_row_builds_and_runs(number):
    torch.manual_seed(0)
    cells = experiments.table_cells(experiments.load_table(number, DANET_PAPER), experiments.load_preset("smoke", DANET_PAPER), 1)
    for cell in cells:
        assert cell.cfg.model.arch == "danet" and cell.cfg.data.dataset == "synthetic"
        model = build_model(cell.cfg.model).train()
        out = model(torch.randn(2, 3, 32, 48))
        assert out["out"].shape == (2, 19, 32, 48), cell.label
        assert model.backbone(torch.randn(1, 3, 32, 48))[1].shape[-2:] == (4, 6), cell.label  # output stride 8


def test_paper_rows_resolve_to_the_paper_switches():
    preset = experiments.load_preset("paper", DANET_PAPER)
    cfgs = {(c.table, c.row.name): c.cfg for n in (1, 2)
            for c in experiments.table_cells(experiments.load_table(n, DANET_PAPER), preset, 1)}
    assert {k: (c.model.backbone, c.model.pam, c.model.cam) for k, c in cfgs.items() if k[0] == 1} == {
        (1, "R50 Dilated FCN"): ("resnet50", False, False), (1, "R50 + PAM"): ("resnet50", True, False),
        (1, "R50 + CAM"): ("resnet50", False, True), (1, "R50 DANet"): ("resnet50", True, True),
        (1, "R101 Dilated FCN"): ("resnet101", False, False), (1, "R101 + PAM"): ("resnet101", True, False),
        (1, "R101 + CAM"): ("resnet101", False, True), (1, "R101 DANet"): ("resnet101", True, True)}
    assert config_hash(cfgs[1, "R101 DANet"]) == config_hash(cfgs[2, "DANet-101"])  # one training, two tables
    ms, mg = cfgs[2, "DANet-101 + DA + MG + MS"], cfgs[2, "DANet-101 + DA + MG"]
    assert config_hash(ms) == config_hash(mg) and len(ms.eval.scales) == 8  # MS: inference only
    assert mg.model.multi_grid == (4, 8, 16) and len(set(config_hash(c) for c in cfgs.values())) == 10


@pytest.mark.parametrize("number", [1, 2])
def test_claims_parse_and_sizes_are_the_papers_deltas(number):
    claims = load_claims(number, DANET_PAPER)
    paper = {r.name: r.paper["miou"] for r in experiments.load_table(number, DANET_PAPER).rows}
    assert claims and all(c.id.startswith("danet-") for c in claims)
    for claim in claims:
        if claim.kind == "delta":
            assert claim.size == pytest.approx(paper[claim.rows[0][0]] - paper[claim.rows[1][0]], abs=0.005), claim.id
    assert {c.kind for n in (1, 2) for c in load_claims(n, DANET_PAPER)} == {"delta", "all_of", "best_of", "value"}


def test_table2_columns_mark_each_strategy_once_it_is_on():
    """DA, Multi-Grid and MS read ✓ from the row where each strategy starts (multi-grid off is None, not a
    value to print), as the paper's Table 2 marks them."""
    table = experiments.load_table(2, DANET_PAPER)
    cells = experiments.table_cells(table, experiments.load_preset("paper", DANET_PAPER), 1)
    marks = {c.row.name: tuple(col.value(c.cfg) for col in table.columns) for c in cells}
    assert marks == {"DANet-101": (False, False, False), "DANet-101 + DA": (True, False, False),
                     "DANet-101 + DA + MG": (True, True, False), "DANet-101 + DA + MG + MS": (True, True, True)}
