"""IFBFNet assembly (paper section 3, Fig. 2) and ``build_model``, which resolves every ablation switch.

Forward contract: ``model(x)`` with x (N, 3, H, W) returns ``{"out": (N, K, H, W)}`` logits at input size;
in training mode with the aux head on, also ``"aux"``: (N, K, H, W) logits of the auxiliary head.
Switched-off parts are ``nn.Identity`` or a pass-through module, chosen once in ``build_model``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ifbf.config import ModelConfig
from ifbf.errors import ConfigError
from ifbf.models.backbone import ResNetBackbone
from ifbf.models.blocks import ASPP, AuxHead, BalancedFusion, Classifier, ConvNormAct, SpatialStream
from ifbf.models.danet import DANet, build_danet
from ifbf.models.deeplabv3plus import DeepLabV3Plus, build_deeplabv3plus
from ifbf.models.norm import NormFactory, norm_act
from ifbf.models.weights import build_backbone

DECODER_CHANNELS = 256  # the reduction, ASPP and decoder width (section 3.1)
LOW_CHANNELS = 64  # S1 after its 3x3 conv, before the concat


def resize(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SpatialMerge(nn.Module):
    """Fusion 2: concat the spatial stream onto the decoder feature, optionally reduce, then fuse."""

    def __init__(self, stream: SpatialStream, reduce: nn.Module, fusion: nn.Module) -> None:
        super().__init__()
        self.stream, self.reduce, self.fusion = stream, reduce, fusion

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.fusion(self.reduce(torch.cat([x, self.stream(image)], dim=1)))  # (N, 256+C or 256, H/4, W/4)


class NoSpatial(nn.Module):
    """Stands in for ``SpatialMerge`` when the spatial stream is off."""

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return x


class SkipDecoder(nn.Module):
    """The skip-connection decoder of section 3.1 (fusion 1 on S1, then the spatial merge).

    ``pre_fusion`` acts on the 320-channel concat (placement "concat"), ``post_fusion`` on the 256-channel
    output of the two 3x3 convs (placement "after_convs"); the other one is ``nn.Identity``.
    """

    def __init__(
        self,
        low_in: int,
        norm: NormFactory,
        pre_fusion: nn.Module,
        post_fusion: nn.Module,
        spatial: nn.Module,
    ) -> None:
        super().__init__()
        self.low_conv = ConvNormAct(low_in, LOW_CHANNELS, 3, norm)
        self.pre_fusion = pre_fusion
        self.convs = nn.Sequential(
            ConvNormAct(DECODER_CHANNELS + LOW_CHANNELS, DECODER_CHANNELS, 3, norm),
            ConvNormAct(DECODER_CHANNELS, DECODER_CHANNELS, 3, norm),
        )
        self.post_fusion = post_fusion
        self.spatial = spatial

    def forward(self, high: torch.Tensor, s1: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        low = self.low_conv(s1)  # (N, 64, H/4, W/4)
        high = resize(high, low.shape[-2:])  # (N, 256, H/4, W/4)
        x = self.pre_fusion(torch.cat([high, low], dim=1))  # (N, 320, H/4, W/4)
        x = self.post_fusion(self.convs(x))  # (N, 256, H/4, W/4)
        return self.spatial(x, image)


class NoDecoder(nn.Module):
    """Baselines 1 and 2: the H/16 feature goes straight to the classifier."""

    def forward(self, high: torch.Tensor, s1: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return high


class IFBFNet(nn.Module):
    def __init__(
        self,
        backbone: ResNetBackbone,
        reduce: nn.Module,
        aspp: nn.Module,
        decoder: nn.Module,
        classifier: Classifier,
        aux_head: AuxHead | None,
    ) -> None:
        super().__init__()
        self.backbone, self.reduce, self.aspp = backbone, reduce, aspp
        self.decoder, self.classifier, self.aux_head = decoder, classifier, aux_head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        s1, s4 = self.backbone(x)  # (N, C1, H/4, W/4), (N, C4, H/16, W/16)
        high = self.aspp(self.reduce(s4))  # (N, 256, H/16, W/16)
        feat = self.decoder(high, s1, x)  # (N, 384, H/4, W/4) for the full model
        result = {"out": resize(self.classifier(feat), size)}
        if self.training and self.aux_head is not None:
            result["aux"] = resize(self.aux_head(s1), size)
        return result

    def fusion_modules(self) -> list[BalancedFusion]:
        return [m for m in self.modules() if isinstance(m, BalancedFusion)]

    def lr_mult_modules(self) -> list[nn.Module]:
        """Modules the paper trains with 10x learning rate: the aux head and the fusion modules (4.1)."""
        return [*self.fusion_modules(), *([self.aux_head] if self.aux_head is not None else [])]


SegModel = IFBFNet | DeepLabV3Plus | DANet  # what build_model gives: the forward contract above, lr_mult_modules()


def _check(cfg: ModelConfig) -> None:
    if cfg.balanced_fusion and not cfg.skip:
        raise ConfigError("model.balanced_fusion=true needs model.skip=true: the fusion acts on the skip concat")
    if cfg.spatial_stream and not cfg.skip:
        raise ConfigError("model.spatial_stream=true needs model.skip=true: the stream joins the skip decoder")


def build_model(cfg: ModelConfig) -> SegModel:
    """Build IFBFNet (or one of its ablations, or DeepLabV3+ or DANet with ``model.arch``) from ``cfg``; the
    backbone gets its ImageNet weights from ``model.weights`` (ifbf.models.weights)."""
    if cfg.arch == "deeplabv3plus":
        return build_deeplabv3plus(cfg)
    if cfg.arch == "danet":
        return build_danet(cfg)
    _check(cfg)
    norm = norm_act(cfg.norm)
    backbone = build_backbone(cfg)

    reduced = cfg.aspp or cfg.reduce_without_aspp
    reduce = ConvNormAct(backbone.high_channels, DECODER_CHANNELS, 1, norm) if reduced else nn.Identity()
    width = DECODER_CHANNELS if reduced else backbone.high_channels
    aspp = (
        ASPP(DECODER_CHANNELS, DECODER_CHANNELS, cfg.aspp_rates, norm, with_1x1=cfg.aspp_1x1_branch)
        if cfg.aspp
        else nn.Identity()
    )

    def fusion(channels: int) -> nn.Module:
        return BalancedFusion(channels) if cfg.balanced_fusion else nn.Identity()

    if cfg.skip:
        concat = cfg.fusion_placement == "concat"
        merged = DECODER_CHANNELS + cfg.spatial_channels
        spatial: nn.Module = NoSpatial()
        if cfg.spatial_stream:
            spatial = SpatialMerge(
                SpatialStream(cfg.spatial_channels, norm),
                reduce=nn.Identity() if concat else ConvNormAct(merged, DECODER_CHANNELS, 1, norm),
                fusion=fusion(merged if concat else DECODER_CHANNELS),
            )
        decoder: nn.Module = SkipDecoder(
            backbone.low_channels,
            norm,
            pre_fusion=fusion(DECODER_CHANNELS + LOW_CHANNELS) if concat else nn.Identity(),
            post_fusion=nn.Identity() if concat else fusion(DECODER_CHANNELS),
            spatial=spatial,
        )
        width = merged if cfg.spatial_stream and concat else DECODER_CHANNELS
    else:
        decoder = NoDecoder()

    classifier = Classifier(width, cfg.num_classes, norm)
    aux = AuxHead(backbone.low_channels, cfg.num_classes, norm) if cfg.aux_head else None
    return IFBFNet(backbone, reduce, aspp, decoder, classifier, aux)
