"""The encoder against torchvision itself: same weights load, same outputs, output stride 16."""

from __future__ import annotations

import pytest
import torch

from ifbf._torchvision import torchvision
from ifbf.config import BASE_CONFIG, load_config
from ifbf.errors import IfbfError
from ifbf.models import build_model
from ifbf.models.backbone import ResNetBackbone
from ifbf.models.norm import backbone_norm
from ifbf.models.weights import load_backbone_weights
from torch import nn


def _save_torchvision(tmp_path, name, **kwargs):
    reference = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


def _stages(model, x):
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    out = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = layer(x)
        out.append(x)
    return out


@pytest.mark.parametrize("name", ["resnet50", "resnet101"])
def test_bottleneck_backbone_equals_torchvision(tmp_path, name):
    torch.manual_seed(0)
    reference, path = _save_torchvision(tmp_path, name, replace_stride_with_dilation=[False, False, True])
    cfg = load_config(BASE_CONFIG, ["model.norm=bn", f"model.backbone={name}", f"model.weights.{name}={path}"])
    model = build_model(cfg.model).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        s1, s4 = model.backbone(x)
        ref = _stages(reference, x)
    assert torch.equal(s1, ref[0]) and torch.equal(s4, ref[3])
    assert s1.shape == (1, 256, 16, 24) and s4.shape == (1, 2048, 4, 6)  # H/4 and H/16


def test_basic_block_backbone_loads_torchvision_weights(tmp_path):
    """torchvision cannot dilate BasicBlocks; ours does, so stages 1-3 must match and stage 4 keeps
    torchvision's weights at stride 1, dilation 2."""
    torch.manual_seed(0)
    reference, path = _save_torchvision(tmp_path, "resnet18")
    model = build_model(load_config(BASE_CONFIG, ["model.norm=bn", "model.backbone=resnet18",
                                                  f"model.weights.resnet18={path}"]).model).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        s1, s4 = model.backbone(x)
        ref = _stages(reference, x)
    assert torch.equal(s1, ref[0])
    assert s4.shape == (1, 512, 4, 6) and ref[3].shape == (1, 512, 2, 3)  # OS16 vs torchvision's OS32
    for ours, theirs in zip(model.backbone.layer4.parameters(), reference.layer4.parameters()):
        assert torch.equal(ours, theirs)
    assert model.backbone.layer4[1].conv1.dilation == (2, 2) and model.backbone.layer4[0].conv1.stride == (1, 1)


def test_weights_missing_file_is_clear():
    cfg = load_config(BASE_CONFIG, ["model.norm=bn", "model.backbone=resnet18", "model.weights.resnet18=/no/such.pth"])
    with pytest.raises(IfbfError, match="model.weights.resnet18: file not found: /no/such.pth .*ifbf weights fetch"):
        build_model(cfg.model)


def test_weights_wrong_depth_is_clear(tmp_path):
    _, path = _save_torchvision(tmp_path, "resnet18")
    cfg = load_config(BASE_CONFIG, ["model.norm=bn", "model.backbone=resnet50", f"model.weights.resnet50={path}"])
    with pytest.raises(IfbfError, match=r"does not fit a resnet50 with model.stem=torchvision: missing \d+.*"
                                        r"looks like a resnet18, not a resnet50: it is the file for resnet18 .*"
                                        r"the resnet50 file comes from `ifbf weights fetch resnet50`"):
        build_model(cfg.model)


def test_weights_not_a_state_dict(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_text("not a checkpoint")
    cfg = load_config(BASE_CONFIG, ["model.norm=bn", "model.backbone=resnet18", f"model.weights.resnet18={path}"])
    with pytest.raises(IfbfError, match=r"garbage.pth is not a torch checkpoint \(text, .*\): download it with "
                                        "`ifbf weights fetch resnet18`") as err:
        build_model(cfg.model)
    assert "weights_only" not in str(err.value)  # torch's advice to load it unsafely is never repeated


def test_inplace_abn_backbone_loads_torchvision_weights(tmp_path):
    pytest.importorskip("inplace_abn")
    _, path = _save_torchvision(tmp_path, "resnet50", replace_stride_with_dilation=[False, False, True])
    backbone = ResNetBackbone("resnet50", backbone_norm("inplace_abn"), inplace_safe=False)
    load_backbone_weights(backbone, path)
    state = torch.load(path)
    assert torch.equal(backbone.layer3[5].bn2.weight, state["layer3.5.bn2.weight"])
    assert not any(isinstance(m, nn.ReLU) and m.inplace for m in backbone.modules())
