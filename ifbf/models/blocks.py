"""Building blocks of IFBFNet (paper section 3). Blocks take explicit sizes and never see the config."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ifbf.models.norm import NormFactory


class ConvNormAct(nn.Sequential):
    """conv (no bias) + norm + activation; ``padding`` keeps the size for odd kernels at stride 1."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        norm: NormFactory,
        stride: int = 1,
        dilation: int = 1,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=False),
            norm(out_channels),
        )


class ASPPPooling(nn.Sequential):
    """Image-level branch of ASPP: global average pool, 1x1 conv, broadcast back to the input size."""

    def __init__(self, in_channels: int, out_channels: int, norm: NormFactory) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), ConvNormAct(in_channels, out_channels, 1, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling as section 4.3.1 describes it.

    Image pooling + one 3x3 atrous conv per rate, concatenated and projected by a 1x1 conv. DeepLabV3's
    extra 1x1 branch is optional (``with_1x1``), off by default because the paper does not list it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        rates: tuple[int, ...],
        norm: NormFactory,
        with_1x1: bool = False,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [ASPPPooling(in_channels, out_channels, norm)]
        if with_1x1:
            branches.append(ConvNormAct(in_channels, out_channels, 1, norm))
        branches += [ConvNormAct(in_channels, out_channels, 3, norm, dilation=r) for r in rates]
        self.branches = nn.ModuleList(branches)
        self.project = ConvNormAct(len(branches) * out_channels, out_channels, 1, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class BalancedFusion(nn.Module):
    """Inter-level feature balanced fusion, section 3.2, equations (2)-(4).

    Input: X = Feat_h ‖ Feat_l (already concatenated). W = sigmoid(Conv1x1(AvgPool(X))) gives one weight
    per channel (W = W_h ‖ W_l, eq. 2); the output is W ⊙ X (eq. 3) plus the residual X ("adding the
    unprocessed features"). The convolutions that follow play the role of K_i in eq. (4).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.weight_conv = nn.Conv2d(channels, channels, kernel_size=1)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The balance weights W, (N, C, 1, 1)."""
        return torch.sigmoid(self.weight_conv(self.pool(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1 + self.weights(x))  # = W ⊙ X + X in one pass over the feature map


class SpatialStream(nn.Sequential):
    """Shallow spatial stream, section 3.3 and Fig. 4: 7x7/2 (64), 3x3/2 (64), 1x1 (C); output H/4."""

    def __init__(self, out_channels: int, norm: NormFactory, mid_channels: int = 64) -> None:
        super().__init__(
            ConvNormAct(3, mid_channels, 7, norm, stride=2),
            ConvNormAct(mid_channels, mid_channels, 3, norm, stride=2),
            ConvNormAct(mid_channels, out_channels, 1, norm),
        )


class Classifier(nn.Sequential):
    """Final head: 1x1 conv to 128 channels, then 1x1 conv to K logits (section 3.1)."""

    def __init__(self, in_channels: int, num_classes: int, norm: NormFactory, mid_channels: int = 128) -> None:
        super().__init__(ConvNormAct(in_channels, mid_channels, 1, norm), nn.Conv2d(mid_channels, num_classes, 1))


class AuxHead(nn.Sequential):
    """Auxiliary head on S1 (section 3.4): 3x3 conv to 64 channels, 1x1 conv to K logits."""

    def __init__(self, in_channels: int, num_classes: int, norm: NormFactory, mid_channels: int = 64) -> None:
        super().__init__(ConvNormAct(in_channels, mid_channels, 3, norm), nn.Conv2d(mid_channels, num_classes, 1))
