"""DeepLabV3+ (model.arch=deeplabv3plus): output shapes, parameters against a hand count, and the
comparison rows of Tables 1 and 6 sharing one run."""

from __future__ import annotations

import pytest
import torch

from ifbf.config import BASE_CONFIG, load_config

from ifbf.identity import config_hash
from ifbf.experiments import load_preset, load_table, row_config
from ifbf.models import build_model


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv_bn(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + 2 * c_out  # conv without bias + BN (weight, bias)


@pytest.mark.parametrize("backbone, c1, c4", [("resnet18", 64, 512), ("resnet101", 256, 2048)])
def test_head_parameters_by_hand(backbone, c1, c4):
    k = 19
    model = build_model(load_config(BASE_CONFIG, ["model.norm=bn", "model.arch=deeplabv3plus",
                                                  f"model.backbone={backbone}"]).model)
    aspp = 2 * _conv_bn(c4, 256, 1) + 3 * _conv_bn(c4, 256, 3) + _conv_bn(5 * 256, 256, 1)  # pool, 1x1, 3 rates
    decoder = _conv_bn(c1, 48, 1) + _conv_bn(304, 256, 3) + _conv_bn(256, 256, 3) + 256 * k + k
    aux = _conv_bn(c1, 64, 3) + 64 * k + k
    assert _params(model) - _params(model.backbone) == aspp + decoder + aux


def test_output_shapes():
    torch.manual_seed(0)
    model = build_model(load_config(BASE_CONFIG, ["model.norm=bn", "model.arch=deeplabv3plus",
                                                  "model.backbone=resnet18", "model.num_classes=5"]).model)
    x = torch.randn(2, 3, 64, 96)
    out = model.train()(x)
    assert out["out"].shape == out["aux"].shape == (2, 5, 64, 96)
    with torch.no_grad():
        assert set(model.eval()(x)) == {"out"}
    assert model.lr_mult_modules() == [model.aux_head] and model.fusion_modules() == []


def test_tables_1_and_6_share_one_deeplabv3plus_run():
    preset = load_preset("paper")
    rows = {t: next(r for r in load_table(t).runnable() if r.name == "DeepLabV3+ (ours)") for t in (1, 6)}
    cfgs = {t: row_config(row, preset) for t, row in rows.items()}
    assert cfgs[1].model.arch == "deeplabv3plus" and cfgs[1].model.stem == "deep"
    assert config_hash(cfgs[1]) == config_hash(cfgs[6])  # one training, two evaluations
    ours = row_config(next(r for r in load_table(1).runnable() if r.name == "Ours"), preset)
    assert config_hash(ours) != config_hash(cfgs[1])
