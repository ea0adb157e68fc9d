"""IFBFNet against the paper's text: every table variant builds and trains, every switch does what
section 3 says, and the fusion module computes equations (2)-(4)."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from ifbf.config import BASE_CONFIG, ConfigError, ModelConfig, load_config
from ifbf.errors import IfbfError
from ifbf.experiments import load_table
from ifbf.models import BalancedFusion, SpatialStream, build_model

TINY = (2, 3, 64, 96)  # batch 2: BatchNorm in train mode needs more than one value per channel


def _variants() -> dict[str, ModelConfig]:
    """Distinct model configs used by Tables 2, 3 and 5 (bn: the test must not need inplace-abn)."""
    seen: dict[ModelConfig, str] = {}
    for number in (2, 3, 5):
        for row in load_table(number).runnable():
            cfg = load_config(BASE_CONFIG, [*row.overrides, "model.norm=bn"]).model
            seen.setdefault(cfg, f"table{number}:{row.name}")
    return {name: cfg for cfg, name in seen.items()}


VARIANTS = _variants()


def model_cfg(*overrides: str) -> ModelConfig:
    return load_config(BASE_CONFIG, ["model.norm=bn", "model.backbone=resnet18", *overrides]).model


def convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def _models(number: int) -> list[ModelConfig]:
    return [load_config(BASE_CONFIG, [*row.overrides, "model.norm=bn"]).model for row in load_table(number).runnable()]


def test_variants_cover_the_tables():
    """Every row of Tables 2 and 3 builds a model of its own (a switch that changed nothing would merge two
    rows); Table 5 sweeps a loss weight on one model the ablations already have; the variants tested below
    are exactly these models."""
    t2, t3, t5 = _models(2), _models(3), _models(5)
    assert len(set(t2)) == len(t2) and len(set(t3)) == len(t3)
    assert len(set(t5)) == 1 and t5[0] in set(t2) | set(t3)
    assert set(VARIANTS.values()) == set(t2) | set(t3)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_forward_backward(name):
    model = build_model(VARIANTS[name]).train()
    x = torch.randn(*TINY)
    result = model(x)
    assert set(result) == {"out", "aux"}
    for logits in result.values():
        assert logits.shape == (2, 19, 64, 96)
        assert torch.isfinite(logits).all()
    (result["out"].mean() + 0.4 * result["aux"].mean()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        assert set(model(x)) == {"out"}  # the aux head is for training only


def test_odd_input_size_keeps_output_size():
    model = build_model(model_cfg()).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 67, 101))["out"].shape == (1, 19, 67, 101)


def test_balanced_fusion_equations_by_hand():
    """Eq. (2): W = sigmoid(Conv1x1(AvgPool(Feat_h || Feat_l))); eq. (3): W ⊙ X; plus the residual X."""
    torch.manual_seed(1)
    ch, cl = 3, 2
    feat_h, feat_l = torch.randn(2, ch, 4, 5), torch.randn(2, cl, 4, 5)
    x = torch.cat([feat_h, feat_l], dim=1)
    fusion = BalancedFusion(ch + cl)
    weight = fusion.weight_conv.weight.detach().reshape(ch + cl, ch + cl)
    bias = fusion.weight_conv.bias.detach()
    expected = []
    for n in range(2):
        pooled = [x[n, c].sum().item() / 20 for c in range(ch + cl)]  # average over 4 x 5 positions
        w = [1 / (1 + torch.exp(-(sum(weight[o, i] * pooled[i] for i in range(ch + cl)) + bias[o]))) for o in range(ch + cl)]
        w_h, w_l = w[:ch], w[ch:]
        balanced = [w_h[c] * feat_h[n, c] for c in range(ch)] + [w_l[c] * feat_l[n, c] for c in range(cl)]  # eq. 3
        expected.append(torch.stack([balanced[c] + x[n, c] for c in range(ch + cl)]))
    assert torch.allclose(fusion(x), torch.stack(expected), atol=1e-6)
    assert fusion.weights(x).shape == (2, ch + cl, 1, 1)
    assert ((fusion.weights(x) > 0) & (fusion.weights(x) < 1)).all()


def test_balanced_fusion_feeds_the_following_convs_eq4():
    """Eq. (4): the next convolution sees W_i * Feat_i (+ the residual), i.e. conv(W ⊙ X + X)."""
    torch.manual_seed(2)
    x = torch.randn(1, 6, 5, 5)
    fusion, conv = BalancedFusion(6), nn.Conv2d(6, 4, 3, padding=1, bias=False)
    w = fusion.weights(x)
    # linearity of the convolution: conv(W⊙X + X) = sum_i (W_i X_i) * K_i + sum_i X_i * K_i
    per_channel = sum(
        nn.functional.conv2d(w[:, i : i + 1] * x[:, i : i + 1], conv.weight[:, i : i + 1], padding=1) for i in range(6)
    )
    assert torch.allclose(conv(fusion(x)), per_channel + conv(x), atol=1e-5)


def test_full_model_widths_follow_section_3_1():
    model = build_model(model_cfg("model.backbone=resnet101"))
    decoder = model.decoder
    assert decoder.low_conv[0].kernel_size == (3, 3) and decoder.low_conv[0].out_channels == 64  # S1 -> 64
    assert decoder.pre_fusion.weight_conv.in_channels == 320  # fusion 1 on concat(256, 64)
    assert [c[0].kernel_size for c in decoder.convs] == [(3, 3), (3, 3)]
    assert decoder.convs[1][0].out_channels == 256
    assert decoder.spatial.fusion.weight_conv.in_channels == 384  # fusion 2 on concat(256, 128)
    head = convs(model.classifier)
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in head] == [(384, 128, (1, 1)), (128, 19, (1, 1))]
    aux = convs(model.aux_head)
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in aux] == [(256, 64, (3, 3)), (64, 19, (1, 1))]
    assert model.reduce[0].in_channels == 2048 and model.reduce[0].out_channels == 256


def test_aspp_matches_section_4_3_1():
    model = build_model(model_cfg())
    aspp = model.aspp
    assert len(aspp.branches) == 4  # image pooling + rates 6, 12, 18; no 1x1 branch
    assert [b[0].dilation for b in aspp.branches[1:]] == [(6, 6), (12, 12), (18, 18)]
    assert all(b[0].out_channels == 256 and b[0].kernel_size == (3, 3) for b in aspp.branches[1:])
    assert aspp.project[0].in_channels == 1024 and aspp.project[0].out_channels == 256
    with_1x1 = build_model(model_cfg("model.aspp_1x1_branch=true")).aspp
    assert len(with_1x1.branches) == 5 and with_1x1.project[0].in_channels == 1280


def test_spatial_stream_adds_exactly_its_three_convs():
    without = build_model(model_cfg("model.balanced_fusion=false", "model.spatial_stream=false"))
    with_stream = build_model(model_cfg("model.balanced_fusion=false"))
    assert len(convs(with_stream)) - len(convs(without)) == 3
    stream = next(m for m in with_stream.modules() if isinstance(m, SpatialStream))
    layout = [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs(stream)]
    assert layout == [(3, 64, (7, 7), (2, 2)), (64, 64, (3, 3), (2, 2)), (64, 128, (1, 1), (1, 1))]
    x = torch.randn(1, 3, 64, 96)
    assert stream.eval()(x).shape == (1, 128, 16, 24)  # H/4


@pytest.mark.parametrize("channels", [16, 48, 256])
def test_spatial_channels_sets_stream_and_head_width(channels):
    model = build_model(model_cfg(f"model.spatial_channels={channels}"))
    assert convs(model.decoder.spatial.stream)[-1].out_channels == channels
    assert convs(model.classifier)[0].in_channels == 256 + channels


def _copy_shared(src: nn.Module, dst: nn.Module) -> None:
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
    assert not unexpected and all("fusion" in k for k in missing)


def _neutral_fusions(model: nn.Module) -> None:
    """Make every fusion add exactly nothing: W = sigmoid(-inf) = 0, so W ⊙ X + X = X."""
    for fusion in model.fusion_modules():
        nn.init.zeros_(fusion.weight_conv.weight)
        nn.init.constant_(fusion.weight_conv.bias, -1e4)


@pytest.mark.parametrize("placement", ["concat", "after_convs"])
def test_fusion_off_is_plain_concat(placement):
    """With the fusion weights forced to zero the fused model equals the fusion-off model exactly:
    fusion adds nothing but W ⊙ X at the concat points, and off means plain concat."""
    plain = build_model(model_cfg("model.balanced_fusion=false", f"model.fusion_placement={placement}")).eval()
    fused = build_model(model_cfg(f"model.fusion_placement={placement}")).eval()
    assert not plain.fusion_modules() and len(fused.fusion_modules()) == 2
    _copy_shared(plain, fused)
    _neutral_fusions(fused)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(fused(x)["out"], plain(x)["out"], atol=1e-5)
        nn.init.constant_(fused.fusion_modules()[0].weight_conv.bias, 0.0)  # W = 0.5: now it must differ
        assert not torch.allclose(fused(x)["out"], plain(x)["out"], atol=1e-3)


def test_fusion_placement_after_convs_widths():
    model = build_model(model_cfg("model.fusion_placement=after_convs"))
    f1, f2 = model.fusion_modules()
    assert f1.weight_conv.in_channels == 256 and f2.weight_conv.in_channels == 256
    assert model.decoder.spatial.reduce[0].in_channels == 384 and model.decoder.spatial.reduce[0].kernel_size == (1, 1)
    assert convs(model.classifier)[0].in_channels == 256


def _classifier_input(model: nn.Module, x: torch.Tensor) -> torch.Size:
    shapes = []
    handle = model.classifier.register_forward_hook(lambda m, i, o: shapes.append(i[0].shape))
    with torch.no_grad():
        model.eval()(x)
    handle.remove()
    return shapes[0]


def test_skip_off_classifies_at_stride_16_and_on_at_stride_4():
    x = torch.randn(1, 3, 64, 96)
    base = model_cfg("model.skip=false", "model.balanced_fusion=false", "model.spatial_stream=false")
    assert _classifier_input(build_model(base), x)[-2:] == (4, 6)
    assert _classifier_input(build_model(model_cfg()), x)[-2:] == (16, 24)


def test_aspp_off_removes_aspp_and_keeps_reduction():
    cfg = model_cfg("model.aspp=false", "model.skip=false", "model.balanced_fusion=false", "model.spatial_stream=false")
    model = build_model(cfg)
    assert isinstance(model.aspp, nn.Identity)
    assert model.reduce[0].out_channels == 256 and convs(model.classifier)[0].in_channels == 256
    bare = build_model(load_config(BASE_CONFIG, ["model.norm=bn", "model.aspp=false", "model.skip=false",
                                                 "model.balanced_fusion=false", "model.spatial_stream=false",
                                                 "model.reduce_without_aspp=false"]).model)
    assert isinstance(bare.reduce, nn.Identity) and convs(bare.classifier)[0].in_channels == 2048


def test_aux_head_switch_and_lr_groups():
    model = build_model(model_cfg()).train()
    groups = model.lr_mult_modules()
    assert model.aux_head in groups and sum(isinstance(m, BalancedFusion) for m in groups) == 2
    no_aux = build_model(model_cfg("model.aux_head=false")).train()
    assert no_aux.aux_head is None and set(no_aux(torch.randn(*TINY))) == {"out"}
    assert no_aux.lr_mult_modules() == no_aux.fusion_modules()


def test_num_classes():
    model = build_model(model_cfg("model.num_classes=7")).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32))["out"].shape == (1, 7, 32, 32)


@pytest.mark.parametrize("switch", ["model.balanced_fusion=true", "model.spatial_stream=true"])
def test_switch_needing_skip_is_rejected(switch):
    with pytest.raises(ConfigError, match="needs model.skip=true"):
        build_model(model_cfg("model.skip=false", "model.balanced_fusion=false", "model.spatial_stream=false", switch))


def test_inplace_abn_model_trains():
    pytest.importorskip("inplace_abn")
    from inplace_abn import InPlaceABN

    model = build_model(model_cfg("model.norm=inplace_abn", "model.backbone=resnet50")).train()
    assert any(isinstance(m, InPlaceABN) for m in model.backbone.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    out = model(torch.randn(*TINY))
    (out["out"].mean() + out["aux"].mean()).backward()  # no in-place clobbering of saved outputs
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_inplace_abn_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "inplace_abn", None)  # makes `import inplace_abn` fail
    with pytest.raises(IfbfError, match="inplace-abn package is not installed: pip install"):
        build_model(model_cfg("model.norm=inplace_abn"))


def test_fold_batchnorm_keeps_outputs():
    from ifbf.models.deploy import fold_batchnorm

    model = build_model(model_cfg()).train()
    with torch.no_grad():
        for _ in range(3):  # give BatchNorm non-trivial running statistics
            model(torch.randn(2, 3, 64, 96))
    model.eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(folded(x)["out"], model(x)["out"], atol=1e-4)


@pytest.mark.parametrize("batch", [1, 2])
def test_inference_form_equals_the_model(batch):
    """BN folded and the balance weights folded into the next convs (eq. 4) give the same outputs."""
    from ifbf.models.deploy import FoldedFusionConv, FoldedSpatialMerge, inference_ready

    model = build_model(model_cfg()).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 3, 64, 96))
    model.eval()
    fast = inference_ready(model)
    assert isinstance(fast.decoder.convs[0][0], FoldedFusionConv) and isinstance(fast.decoder.spatial, FoldedSpatialMerge)
    x = torch.randn(batch, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(fast(x.contiguous(memory_format=torch.channels_last))["out"], model(x)["out"], atol=1e-4)


def _trained_in_eval(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for _ in range(3):  # non-trivial BatchNorm statistics
            model.train()(torch.randn(2, 3, 64, 96))
    return model.eval()


def test_inference_form_finds_the_classifier_behind_a_dropout():
    """The balance weights of fusion 2 fold into the classifier's first conv wherever it sits: behind a dropout
    (an eval-time no-op) they still fold; behind an operation that is not one (a BatchNorm) nothing is folded
    there, and either way the outputs are the model's."""
    from ifbf.models.deploy import FoldedSpatialMerge, inference_ready

    model = build_model(model_cfg())
    first = convs(model.classifier)[0]
    model.classifier = nn.Sequential(nn.Dropout2d(0.5), model.classifier)
    _trained_in_eval(model)
    fast = inference_ready(model, channels_last=False)
    assert isinstance(fast.decoder.spatial, FoldedSpatialMerge)
    assert fast.decoder.spatial.conv.weight.shape == first.weight.shape and len(convs(fast.classifier)) == 1
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(fast(x)["out"], model(x)["out"], atol=1e-4)

    model = build_model(model_cfg())
    width = convs(model.classifier)[0].in_channels
    model.classifier = nn.Sequential(nn.BatchNorm2d(width), model.classifier)
    _trained_in_eval(model)
    kept = inference_ready(model, channels_last=False)
    assert not isinstance(kept.decoder.spatial, FoldedSpatialMerge) and len(convs(kept.classifier)) == 2
    with torch.no_grad():
        assert torch.allclose(kept(x)["out"], model(x)["out"], atol=1e-4)
