"""Dilated ResNet encoder in torchvision's layout (section 3.1), output stride 16 or 8.

At output stride 16 stage 3 keeps stride 2 and stage 4 uses stride 1 and dilation 2 (torchvision's
``replace_stride_with_dilation=[False, False, True]``); at 8 (DANet) stage 3 also runs at stride 1, dilation
2, and stage 4 at dilation 4 (``[False, True, True]``). As in torchvision, the first block of a dilated stage
keeps the previous stage's dilation. ``multi_grid`` gives stage 4's blocks their own dilations, cycled
(DeepLabV3's multi-grid; DANet's are 4, 8, 16, the first block included). Module names are torchvision's, so
a torchvision ``resnet*`` state dict loads into it unchanged (ifbf.models.weights loads and checks the files).

Two switches give the ResNet of the CCNet code line the training recipe comes from (paper-notes,
ambiguity 10): ``stem="deep"`` replaces the 7x7 conv by three 3x3 convs 3->64 (stride 2) ->64->128,
named conv1/bn1, conv2/bn2, conv3/bn3 as in CCNet; ``"deep_v1c"`` is mmsegmentation's ResNetV1c stem,
32-32-64. The max-pool keeps floor mode: CCNet's ceil mode equals it at CCNet's odd crops (8k + 1), but at
the paper's even sizes (876, 1024x2048) it would make S1 one pixel larger than the spatial stream's H/4.
``dilate_first_block=True`` dilates the first block of each dilated stage too (CCNet, mmseg); torchvision
leaves its 3x3 conv at the previous stage's dilation.
"""

from __future__ import annotations

import torch
from torch import nn

from ifbf._torchvision import torchvision
from ifbf.errors import IfbfError
from ifbf.models.norm import NormFactory

resnet = torchvision.models.resnet

# (S1 channels, S4 channels) per backbone: the decoder takes its widths from here.
CHANNELS = {
    "resnet18": (64, 512),
    "resnet34": (64, 512),
    "resnet50": (256, 2048),
    "resnet101": (256, 2048),
}


class _OutOfPlaceBottleneck(resnet.Bottleneck):
    """torchvision's Bottleneck with an out-of-place residual add (InPlace-ABN saves its output)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class _OutOfPlaceBasicBlock(resnet.BasicBlock):
    """torchvision's BasicBlock with an out-of-place residual add (InPlace-ABN saves its output)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


def _make_out_of_place(model: nn.Module) -> None:
    """InPlace-ABN keeps its output for backward, so nothing may modify it in place afterwards:
    ReLUs become out-of-place and the residual add too (as in the CCNet code the paper's recipe uses)."""
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
        elif type(module) is resnet.Bottleneck:
            module.__class__ = _OutOfPlaceBottleneck
        elif type(module) is resnet.BasicBlock:
            module.__class__ = _OutOfPlaceBasicBlock


def _set_dilation(conv: nn.Conv2d, dilation: int) -> None:
    conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)


def _dilate_basic_layer(layer: nn.Sequential, dilation: int, previous: int) -> None:
    """Give a BasicBlock stage stride 1 and ``dilation`` (torchvision only does this for Bottleneck).

    Mirrors torchvision's rule for Bottleneck: the first block keeps the previous dilation in its first conv.
    """
    first = layer[0]
    first.conv1.stride = (1, 1)
    first.downsample[0].stride = (1, 1)
    _set_dilation(first.conv1, previous)
    _set_dilation(first.conv2, dilation)
    for block in layer[1:]:
        _set_dilation(block.conv1, dilation)
        _set_dilation(block.conv2, dilation)


def _multi_grid(layer: nn.Sequential, rates: tuple[int, ...]) -> None:
    """Block i of the stage gets dilation ``rates[i % len(rates)]`` in its 3x3 convs (DANet's code)."""
    for i, block in enumerate(layer):
        for conv in (block.conv1, block.conv2):
            if conv.kernel_size == (3, 3):
                _set_dilation(conv, rates[i % len(rates)])


# Widths of the three 3x3 convs of each deep stem.
DEEP_STEMS = {"deep": (64, 64, 128), "deep_v1c": (32, 32, 64)}


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
    return conv


def _widen_first_block(layer: nn.Sequential, in_channels: int, norm_layer: NormFactory) -> None:
    """Let the first block of layer1 take ``in_channels`` (128 after CCNet's stem) instead of 64."""
    block = layer[0]
    block.conv1 = _conv(in_channels, block.conv1.out_channels, block.conv1.kernel_size[0])
    out_channels = block.conv3.out_channels if hasattr(block, "conv3") else block.conv2.out_channels
    if block.downsample is None:
        block.downsample = nn.Sequential(_conv(in_channels, out_channels, 1), norm_layer(out_channels))
    else:
        block.downsample[0] = _conv(in_channels, out_channels, 1)


def _dilate_first_block(layer: nn.Sequential) -> None:
    """Give the 3x3 convs of the first block the dilation of the rest of the stage (CCNet's rule)."""
    dilation = layer[-1].conv2.dilation[0]
    for conv in (layer[0].conv1, layer[0].conv2):
        if conv.kernel_size == (3, 3):
            _set_dilation(conv, dilation)


def _dilate(tv: nn.Module, bottleneck: bool, output_stride: int, first_block: bool,
            multi_grid: tuple[int, ...] | None) -> None:
    """The dilation of stages 3 and 4 beyond what torchvision's constructor set (see the module docstring)."""
    stage3 = output_stride == 8
    if not bottleneck:
        if stage3:
            _dilate_basic_layer(tv.layer3, 2, 1)
        _dilate_basic_layer(tv.layer4, 4 if stage3 else 2, 2 if stage3 else 1)
    if first_block:
        for layer in (tv.layer3, tv.layer4) if stage3 else (tv.layer4,):
            _dilate_first_block(layer)
    if multi_grid:
        _multi_grid(tv.layer4, multi_grid)


class ResNetBackbone(nn.Module):
    """Returns (S1, S4): layer1 output at H/4 and layer4 output at H/``output_stride`` (16 or 8)."""

    def __init__(
        self,
        name: str,
        norm_layer: NormFactory,
        inplace_safe: bool = True,
        stem: str = "torchvision",
        dilate_first_block: bool = False,
        output_stride: int = 16,
        multi_grid: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        if name not in CHANNELS:
            raise IfbfError(f"model.backbone: unknown backbone {name!r} (choose from {', '.join(CHANNELS)})")
        if output_stride not in (8, 16):
            raise IfbfError(f"model.output_stride: {output_stride!r} is not one of 8, 16")
        bottleneck = name in ("resnet50", "resnet101")
        tv = getattr(torchvision.models, name)(
            weights=None,
            norm_layer=norm_layer,
            replace_stride_with_dilation=[False, bottleneck and output_stride == 8, bottleneck],
        )
        _dilate(tv, bottleneck, output_stride, dilate_first_block, multi_grid)
        self.stem = stem
        if stem == "torchvision":
            self.conv1, self.bn1 = tv.conv1, tv.bn1
        elif stem in DEEP_STEMS:
            w1, w2, w3 = DEEP_STEMS[stem]
            self.conv1, self.bn1 = _conv(3, w1, 3, stride=2), norm_layer(w1)
            self.conv2, self.bn2 = _conv(w1, w2, 3), norm_layer(w2)
            self.conv3, self.bn3 = _conv(w2, w3, 3), norm_layer(w3)
            if w3 != 64:
                _widen_first_block(tv.layer1, w3, norm_layer)
        else:
            raise IfbfError(f"model.stem: unknown stem {stem!r} (choose from torchvision, {', '.join(DEEP_STEMS)})")
        if not inplace_safe:
            _make_out_of_place(tv)
        self.relu, self.maxpool = tv.relu, tv.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = tv.layer1, tv.layer2, tv.layer3, tv.layer4
        self.name = name
        self.low_channels, self.high_channels = CHANNELS[name]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.stem != "torchvision":
            x = self.relu(self.bn3(self.conv3(self.relu(self.bn2(self.conv2(x))))))
        x = self.maxpool(x)
        s1 = self.layer1(x)  # (N, C1, H/4, W/4)
        s4 = self.layer4(self.layer3(self.layer2(s1)))  # (N, C4, H/os, W/os), os = 16 or 8
        return s1, s4
