"""DANet (model.arch=danet): the attention modules against the paper's equations (1)-(4) written out with loops,
and against the authors' CAM formula; their learnable scales; the head's parameters against a hand count; the
backbone against torchvision's dilated ResNet at output stride 8; the auxiliary branch losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ifbf._torchvision import torchvision
from ifbf.config import BASE_CONFIG, load_config
from ifbf.engine.losses import total_loss
from ifbf.models import build_model
from ifbf.models.danet import ChannelAttention, PositionAttention
from ifbf.models.deploy import inference_ready

K = 19
DANET_BASE = BASE_CONFIG.parent.parent / "danet" / "base.yaml"  # experiments/danet/


def _danet(*overrides: str):
    return build_model(load_config(BASE_CONFIG, ["model.norm=bn", "model.arch=danet", "model.output_stride=8",
                                                 *overrides]).model)


def _pam_by_loops(module: PositionAttention, a: torch.Tensor) -> torch.Tensor:
    """Equations (1) and (2) for one image, one output position j at a time: s_ji = exp(B_i . C_j) /
    sum_i exp(B_i . C_j), E_j = alpha sum_i s_ji D_i + A_j, with B, C, D the 1x1 convs as matrix products."""
    c_in, h, w = a.shape
    flat = a.reshape(c_in, h * w)

    def conv(layer: torch.nn.Conv2d) -> torch.Tensor:
        return layer.weight[:, :, 0, 0] @ flat + layer.bias[:, None]  # (C', N)

    b, c, d = conv(module.b), conv(module.c), conv(module.d)
    out = torch.empty_like(flat)
    for j in range(h * w):
        energies = torch.stack([b[:, i] @ c[:, j] for i in range(h * w)])
        s = torch.exp(energies) / torch.exp(energies).sum()
        out[:, j] = module.alpha * sum(s[i] * d[:, i] for i in range(h * w)) + flat[:, j]
    return out.reshape(c_in, h, w)


def _cam_by_loops(beta: torch.Tensor, a: torch.Tensor, sign: float) -> torch.Tensor:
    """Equations (3) and (4) for one image: x_ji = exp(sign A_i . A_j) / sum_i exp(sign A_i . A_j),
    E_j = beta sum_i x_ji A_i + A_j (sign = +1 as printed, -1 the authors' code)."""
    c_in = a.shape[0]
    flat = a.reshape(c_in, -1)
    out = torch.empty_like(flat)
    for j in range(c_in):
        energies = torch.stack([sign * (flat[i] @ flat[j]) for i in range(c_in)])
        x = torch.exp(energies) / torch.exp(energies).sum()
        out[j] = beta * sum(x[i] * flat[i] for i in range(c_in)) + flat[j]
    return out.reshape(a.shape)


def _matches_loops(module: torch.nn.Module, scale: torch.nn.Parameter, value: float, a: torch.Tensor,
                   loops) -> None:
    """``module`` (its learnable scale set to ``value``) on each image of ``a`` equals ``loops(image)``."""
    with torch.no_grad():
        scale.fill_(value)
        ours = module(a)
        for n in range(len(a)):
            assert torch.allclose(ours[n], loops(a[n]), atol=1e-10)


def test_pam_follows_equations_1_and_2():
    torch.manual_seed(0)
    pam = PositionAttention(16, reduction=8).double()
    a = torch.randn(2, 16, 3, 4, dtype=torch.float64)
    _matches_loops(pam, pam.alpha, 0.7, a, lambda image: _pam_by_loops(pam, image))
    assert pam.b.out_channels == pam.c.out_channels == 2 and pam.d.out_channels == 16  # C/8 and C (the code)


def test_pam_softmax_runs_over_the_source_positions():
    torch.manual_seed(1)
    pam = PositionAttention(8, reduction=2)
    s = pam.attention(torch.randn(1, 8, 5, 6))
    assert s.shape == (1, 30, 30) and torch.allclose(s.sum(-1), torch.ones(1, 30))  # each j: sum_i s_ji = 1


@pytest.mark.parametrize("energy, sign", [("negated", -1.0), ("direct", 1.0)])
def test_cam_follows_equations_3_and_4(energy, sign):
    torch.manual_seed(2)
    cam = ChannelAttention(negated=energy == "negated").double()
    a = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    _matches_loops(cam, cam.beta, 0.3, a, lambda image: _cam_by_loops(cam.beta, image, sign))


def test_negated_cam_is_the_authors_max_minus_energy():
    """The authors' CAM_Module: softmax(max_i(A_j . A_i) - A_j . A_i), written as in their code."""
    torch.manual_seed(3)
    a = torch.randn(2, 5, 4, 4)
    q = a.flatten(2)
    energy = torch.bmm(q, q.transpose(1, 2))
    theirs = torch.softmax(energy.max(-1, keepdim=True)[0].expand_as(energy) - energy, dim=-1)
    assert torch.allclose(ChannelAttention(negated=True).attention(a), theirs, atol=1e-6)
    assert not torch.allclose(ChannelAttention(negated=False).attention(a), theirs, atol=1e-3)


def test_scales_start_at_zero_and_then_modules_return_their_input():
    """alpha and beta are single learnable scalars initialised to 0 (section 3.2-3.3; nn.Parameter(torch.zeros(1))
    in the authors' code), so at initialisation each module is the identity, whatever its convs hold."""
    torch.manual_seed(4)
    pam, cam = PositionAttention(16, 8), ChannelAttention(negated=True)
    for scale in (pam.alpha, cam.beta):
        assert isinstance(scale, torch.nn.Parameter) and scale.shape == (1,) and scale.item() == 0.0
    a = torch.randn(2, 16, 5, 7)
    assert torch.equal(pam(a), a) and torch.equal(cam(a), a)
    model = _danet("model.backbone=resnet18")
    assert [m.alpha.item() for m in model.modules() if isinstance(m, PositionAttention)] == [0.0]
    assert [m.beta.item() for m in model.modules() if isinstance(m, ChannelAttention)] == [0.0]


def test_scales_receive_gradients():
    torch.manual_seed(5)
    pam, cam = PositionAttention(8, 2), ChannelAttention(negated=True)
    a = torch.randn(1, 8, 3, 3)
    (pam(a).square().sum() + cam(a).square().sum()).backward()
    assert pam.alpha.grad.abs().item() > 0 and cam.beta.grad.abs().item() > 0


def _conv_bn(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + 2 * c_out  # conv without bias + BN (weight, bias)


def _head_by_hand(pam: bool, cam: bool, c4: int = 2048, k: int = K) -> int:
    """The authors' DANetHead / FCNHead, counted from their constructors: inter = C4/4."""
    mid = c4 // 4
    classifier = mid * k + k
    pam_module = 2 * (mid * (mid // 8) + mid // 8) + mid * mid + mid + 1  # B, C (C/8), D, alpha
    branches = [_conv_bn(c4, mid, 3) + module + _conv_bn(mid, mid, 3)
                for on, module in ((pam, pam_module), (cam, 1)) if on]  # CAM: beta only
    if not branches:
        return _conv_bn(c4, mid, 3) + classifier
    return sum(branches) + classifier + (classifier * len(branches) if len(branches) == 2 else 0)


HEADS = {  # Table 1's four heads on R50/R101 (C4 = 2048), K = 19: parameters in millions, for the docs
    (False, False): 9.447955, (True, False): 12.136596, (False, True): 11.808276, (True, True): 23.954619,
}


@pytest.mark.parametrize("pam, cam", list(HEADS))
def test_table1_head_parameters_by_hand(pam, cam):
    model = _danet("model.backbone=resnet50", f"model.pam={str(pam).lower()}", f"model.cam={str(cam).lower()}")
    head = sum(p.numel() for p in model.head.parameters())
    assert head == _head_by_hand(pam, cam)
    assert head / 1e6 == pytest.approx(HEADS[pam, cam], abs=1e-6)  # the figures docs/danet-reading.md quotes


def test_backbone_is_torchvisions_dilated_resnet_at_output_stride_8(tmp_path):
    torch.manual_seed(6)
    reference = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, True, True]).eval()
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    model = _danet("model.backbone=resnet50", f"model.weights.resnet50={path}").eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        _, s4 = model.backbone(x)
        y = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        ref = reference.layer4(reference.layer3(reference.layer2(reference.layer1(y))))
    assert s4.shape == (1, 2048, 8, 12) and torch.equal(s4, ref)  # H/8: the map entering the head
    dilations = [b.conv2.dilation[0] for b in (*model.backbone.layer3, *model.backbone.layer4)]
    assert dilations == [1] + [2] * 5 + [2, 4, 4]  # first block of a dilated stage keeps the previous rate


def test_multi_grid_sets_stage_4_rates():
    model = _danet("model.backbone=resnet50", "model.multi_grid=[4, 8, 16]")
    assert [b.conv2.dilation[0] for b in model.backbone.layer4] == [4, 8, 16]
    basic = _danet("model.backbone=resnet18", "model.multi_grid=[4, 8]")
    assert [(b.conv1.dilation[0], b.conv2.dilation[0]) for b in basic.backbone.layer4] == [(4, 4), (8, 8)]


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34"])
def test_basic_block_backbones_reach_output_stride_8(backbone):
    model = _danet(f"model.backbone={backbone}", "model.num_classes=5")
    x = torch.randn(2, 3, 64, 96)
    _, s4 = model.backbone(x)
    assert s4.shape == (2, 512, 8, 12)
    out = model.train()(x)
    assert set(out) == {"out", "aux_pam", "aux_cam"} and all(v.shape == (2, 5, 64, 96) for v in out.values())
    with torch.no_grad():
        assert set(model.eval()(x)) == {"out"}


@pytest.mark.parametrize("pam, cam", [(True, False), (False, True), (False, False)])
def test_one_loss_without_both_modules(pam, cam):
    """The authors trained the FCN and the single-module heads with one loss (their issue #30)."""
    model = _danet("model.backbone=resnet18", f"model.pam={str(pam).lower()}", f"model.cam={str(cam).lower()}")
    assert set(model.train()(torch.randn(2, 3, 32, 32))) == {"out"}
    assert list(model.head.branches) == ([n for n, on in (("pam", pam), ("cam", cam)) if on] or ["fcn"])


def test_branch_losses_sum_at_weight_one_as_the_authors_multi_loss():
    """SegmentationMultiLosses: CE(sum) + CE(PAM branch) + CE(CAM branch), all plain cross-entropy."""
    cfg = load_config(DANET_BASE, ["model.norm=bn"])
    assert (cfg.train.aux_weight, cfg.train.ohem) == (1.0, "none")
    g = torch.Generator().manual_seed(7)
    outputs = {k: torch.randn(2, 5, 6, 6, generator=g) for k in ("out", "aux_pam", "aux_cam")}
    target = torch.randint(0, 5, (2, 6, 6), generator=g)
    target[0, 0] = 255
    parts = total_loss(outputs, target, cfg.train)
    expected = sum(F.cross_entropy(v, target, ignore_index=255) for v in outputs.values())
    assert parts["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(parts) == {"out", "aux_pam", "aux_cam", "total"}


def test_branch_heads_switch_and_head_learning_rate():
    on, off = _danet("model.backbone=resnet18"), _danet("model.backbone=resnet18", "model.branch_heads=false")
    assert set(on.head.branch_classifiers) == {"pam", "cam"} and len(off.head.branch_classifiers) == 0
    assert set(off.train()(torch.randn(2, 3, 32, 32))) == {"out"}
    assert on.lr_mult_modules() == [on.head] and on.fusion_modules() == []


def test_forward_backward_at_output_stride_8():
    torch.manual_seed(8)
    model = _danet("model.backbone=resnet18", "model.num_classes=4").train()
    out = model(torch.randn(2, 3, 40, 56))
    total_loss(out, torch.randint(0, 4, (2, 40, 56)), load_config(BASE_CONFIG, ["train.ohem=none"]).train)["total"].backward()
    grads = [p.grad for p in model.head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_deployment_form_equals_the_model():
    """`ifbf cost` times the BN-folded form: it must compute the same logits."""
    torch.manual_seed(9)
    model = _danet("model.backbone=resnet18", "model.num_classes=5").eval()
    for m in model.modules():
        if isinstance(m, (PositionAttention, ChannelAttention)):
            torch.nn.init.constant_(m.alpha if isinstance(m, PositionAttention) else m.beta, 0.5)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        expected = model(x)["out"]
        folded = inference_ready(model, channels_last=False)(x)["out"]
    assert torch.allclose(folded, expected, atol=1e-4)
