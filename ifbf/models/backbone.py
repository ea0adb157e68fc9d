"""Dilated ResNet encoder in torchvision's layout (section 3.1), output stride 16.

Stage 3 keeps stride 2, stage 4 uses stride 1 and dilation 2 (torchvision's
``replace_stride_with_dilation=[False, False, True]``). Module names are torchvision's, so a torchvision
``resnet*`` state dict loads into it unchanged (its ``fc.*`` entries are ignored).
"""

from __future__ import annotations

from pathlib import Path

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


def _dilate_basic_layer4(layer: nn.Sequential) -> None:
    """Give a BasicBlock stage 4 stride 1 and dilation 2 (torchvision only does this for Bottleneck).

    Mirrors torchvision's rule for Bottleneck: the first block keeps dilation 1 in its first conv.
    """
    first = layer[0]
    first.conv1.stride = (1, 1)
    first.downsample[0].stride = (1, 1)
    for i, block in enumerate(layer):
        convs = [block.conv2] if i == 0 else [block.conv1, block.conv2]
        for conv in convs:
            conv.dilation, conv.padding = (2, 2), (2, 2)


class ResNetBackbone(nn.Module):
    """Returns (S1, S4): layer1 output at H/4 and layer4 output at H/16."""

    def __init__(self, name: str, norm_layer: NormFactory, inplace_safe: bool = True) -> None:
        super().__init__()
        if name not in CHANNELS:
            raise IfbfError(f"model.backbone: unknown backbone {name!r} (choose from {', '.join(CHANNELS)})")
        bottleneck = name in ("resnet50", "resnet101")
        tv = getattr(torchvision.models, name)(
            weights=None,
            norm_layer=norm_layer,
            replace_stride_with_dilation=[False, False, bottleneck],
        )
        if not bottleneck:
            _dilate_basic_layer4(tv.layer4)
        if not inplace_safe:
            _make_out_of_place(tv)
        self.conv1, self.bn1, self.relu, self.maxpool = tv.conv1, tv.bn1, tv.relu, tv.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = tv.layer1, tv.layer2, tv.layer3, tv.layer4
        self.name = name
        self.low_channels, self.high_channels = CHANNELS[name]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        s1 = self.layer1(x)  # (N, C1, H/4, W/4)
        s4 = self.layer4(self.layer3(self.layer2(s1)))  # (N, C4, H/16, W/16)
        return s1, s4

    def load_torchvision_weights(self, path: str | Path) -> None:
        """Load a torchvision ``resnet*`` state dict from a local file; any mismatch is an error."""
        path = Path(path)
        if not path.is_file():
            raise IfbfError(
                f"model.pretrained: file not found: {path} (give a local torchvision resnet state dict, "
                "e.g. saved with torch.save(torchvision.models.resnet101(weights=...).state_dict(), path), or null)"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise IfbfError(f"model.pretrained: cannot read {path} as a torch state dict: {err}") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise IfbfError(f"model.pretrained: {path} is not a plain state dict (name -> tensor)")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or wrong_shape:
            parts = [
                f"{label} {len(keys)} (e.g. {keys[0]})"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
                if keys
            ]
            raise IfbfError(
                f"model.pretrained: {path} does not match torchvision's {self.name}: {'; '.join(parts)}. "
                f"Is it a state dict of a {self.name}?"
            )
        self.load_state_dict(state)
