"""DeepLabV3+ (Chen et al., ECCV 2018), the model the paper's headline claims compare against.

Built on the same dilated ResNet (output stride 16) and trained with the same recipe as IFBFNet, so a
gap between the two comes from the head, not the training (``model.arch=deeplabv3plus``):
- ASPP on the 2048-channel S4: 1x1 conv, 3x3 atrous convs at ``model.aspp_rates`` and image pooling,
  256 channels each, concatenated (1280) and projected to 256 by a 1x1 conv;
- decoder: S1 reduced to 48 channels by a 1x1 conv, concatenated with the ASPP output upsampled x4
  (304 channels), two 3x3 convs to 256, a 1x1 conv to K logits, upsampled x4;
- the recipe's auxiliary head on S1 when ``model.aux_head`` is on (as for IFBFNet, 10x learning rate).
No dropout (IFBFNet has none either). IFBFNet's switches (skip, fusion, spatial stream, reduction) do
not apply: set away from their defaults they are refused for this architecture (``config.ARCH_FIELDS``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ifbf.config import ModelConfig
from ifbf.models.backbone import ResNetBackbone
from ifbf.models.blocks import ASPP, AuxHead, ConvNormAct
from ifbf.models.norm import NormFactory, norm_act
from ifbf.models.weights import build_backbone

ASPP_CHANNELS = 256
LOW_CHANNELS = 48  # the low-level reduction of DeepLabV3+ (section 4.1 of its paper)


def _resize(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class Decoder(nn.Module):
    """1x1 S1 -> 48, concat with the upsampled ASPP output, two 3x3 convs to 256, 1x1 to K logits."""

    def __init__(self, low_in: int, num_classes: int, norm: NormFactory) -> None:
        super().__init__()
        self.low_conv = ConvNormAct(low_in, LOW_CHANNELS, 1, norm)
        self.convs = nn.Sequential(
            ConvNormAct(ASPP_CHANNELS + LOW_CHANNELS, ASPP_CHANNELS, 3, norm),
            ConvNormAct(ASPP_CHANNELS, ASPP_CHANNELS, 3, norm),
        )
        self.classifier = nn.Conv2d(ASPP_CHANNELS, num_classes, 1)

    def forward(self, high: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        low = self.low_conv(s1)  # (N, 48, H/4, W/4)
        x = torch.cat([_resize(high, low.shape[-2:]), low], dim=1)  # (N, 304, H/4, W/4)
        return self.classifier(self.convs(x))  # (N, K, H/4, W/4)


class DeepLabV3Plus(nn.Module):
    """Same forward contract as IFBFNet: {"out": (N, K, H, W)} (+ "aux" in training with the aux head)."""

    def __init__(self, backbone: ResNetBackbone, aspp: ASPP, decoder: Decoder, aux_head: AuxHead | None) -> None:
        super().__init__()
        self.backbone, self.aspp, self.decoder, self.aux_head = backbone, aspp, decoder, aux_head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        s1, s4 = self.backbone(x)  # (N, C1, H/4, W/4), (N, C4, H/16, W/16)
        result = {"out": _resize(self.decoder(self.aspp(s4), s1), size)}
        if self.training and self.aux_head is not None:
            result["aux"] = _resize(self.aux_head(s1), size)
        return result

    def fusion_modules(self) -> list[nn.Module]:
        return []

    def lr_mult_modules(self) -> list[nn.Module]:
        """The recipe's 10x learning rate: the aux head (DeepLabV3+ has no fusion modules)."""
        return [self.aux_head] if self.aux_head is not None else []


def build_deeplabv3plus(cfg: ModelConfig) -> DeepLabV3Plus:
    norm = norm_act(cfg.norm)
    backbone = build_backbone(cfg)
    aspp = ASPP(backbone.high_channels, ASPP_CHANNELS, cfg.aspp_rates, norm, with_1x1=True)
    decoder = Decoder(backbone.low_channels, cfg.num_classes, norm)
    aux = AuxHead(backbone.low_channels, cfg.num_classes, norm) if cfg.aux_head else None
    return DeepLabV3Plus(backbone, aspp, decoder, aux)
