"""DANet (Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019, arXiv 1809.02983): the dual
attention head on a dilated ResNet (``model.arch=danet``). Every number and its source: docs/danet-reading.md.

- Backbone: the dilated ResNet at ``model.output_stride`` (DANet: 8), stage 4's blocks at ``model.multi_grid``
  dilations when given (Table 2: 4, 8, 16). The head reads S4 only: (N, C4, H/8, W/8).
- Head (section 3.1, Fig. 2; the authors' ``DANetHead``): one branch per attention module, each a 3x3 conv
  C4 -> C4/4 (2048 -> 512 for R50/R101), the module, a 3x3 conv C4/4 -> C4/4; the branches are summed, then
  dropout (0.1) and a 1x1 conv to K logits, upsampled bilinearly to the input size.
- ``model.branch_heads`` with both modules: each branch also gets its own dropout + 1x1 classifier, whose logits
  are auxiliary outputs in training (the authors' code sums the three cross-entropies, weight 1 each).
- Neither module: Table 1's dilated FCN baseline (the authors' ``FCNHead``): 3x3 conv, dropout, 1x1 conv.

Forward contract: ``{"out": (N, K, H, W)}``; in training with branch heads also ``"aux_pam"``, ``"aux_cam"``.
Not read here: IFBFNet's switches (ASPP, skip, fusions, spatial stream) and its S1 auxiliary head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ifbf.config import ModelConfig
from ifbf.models.backbone import ResNetBackbone
from ifbf.models.blocks import ConvNormAct
from ifbf.models.norm import NormFactory, norm_act
from ifbf.models.weights import build_backbone

DROPOUT = 0.1  # before every classifier (the authors' code; the paper does not say)


def _resize(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class PositionAttention(nn.Module):
    """Position attention module, section 3.2, equations (1) and (2), on A of shape (N, C, H, W), N' = H*W.

    B and C are 1x1 convs of A to C/``reduction`` channels, D a 1x1 conv to C channels (all with bias).
    s_ji = exp(B_i . C_j) / sum_i exp(B_i . C_j): how much position i feeds position j.
    E_j = alpha * sum_i s_ji D_i + A_j, with the scale alpha learnt from 0 (``gamma`` in the authors' code;
    their ``key_conv`` is B here, their ``query_conv`` C).
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        inner = max(1, channels // reduction)
        self.b = nn.Conv2d(channels, inner, 1)
        self.c = nn.Conv2d(channels, inner, 1)
        self.d = nn.Conv2d(channels, channels, 1)
        self.alpha = nn.Parameter(torch.zeros(1))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """S as (N, N', N') with S[n, j, i] = s_ji: each row sums to 1."""
        b, c = self.b(x).flatten(2), self.c(x).flatten(2)  # (N, C', N')
        return torch.softmax(torch.bmm(c.transpose(1, 2), b), dim=-1)  # [n, j, i] = C_j . B_i

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.d(x).flatten(2)  # (N, C, N')
        e = torch.bmm(d, self.attention(x).transpose(1, 2))  # [n, :, j] = sum_i s_ji D_i
        return self.alpha * e.view_as(x) + x


class ChannelAttention(nn.Module):
    """Channel attention module, section 3.3, equations (3) and (4), on A of shape (N, C, H, W); no convs.

    x_ji = exp(sign * A_i . A_j) / sum_i exp(sign * A_i . A_j): how much channel i feeds channel j.
    E_j = beta * sum_i x_ji A_i + A_j, with the scale beta learnt from 0 (``gamma`` in the authors' code).
    ``negated`` (sign = -1) is the authors' code, which takes the softmax of max_i(A_i . A_j) - A_i . A_j,
    the same as of -A_i . A_j; sign = +1 is equation (3) as printed (docs/danet-reading.md, ambiguity 2).
    """

    def __init__(self, negated: bool) -> None:
        super().__init__()
        self.sign = -1.0 if negated else 1.0
        self.beta = nn.Parameter(torch.zeros(1))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """X as (N, C, C) with X[n, j, i] = x_ji: each row sums to 1."""
        a = x.flatten(2)  # (N, C, N')
        return torch.softmax(self.sign * torch.bmm(a, a.transpose(1, 2)), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = torch.bmm(self.attention(x), x.flatten(2))  # [n, j, :] = sum_i x_ji A_i
        return self.beta * e.view_as(x) + x


class AttentionBranch(nn.Sequential):
    """One branch of the head: 3x3 conv in -> mid, the attention module, 3x3 conv mid -> mid (``conv5a``, ``sa``,
    ``conv51`` in the authors' code; ``conv5c``, ``sc``, ``conv52`` for the channel branch)."""

    def __init__(self, in_channels: int, mid_channels: int, attention: nn.Module, norm: NormFactory) -> None:
        super().__init__(ConvNormAct(in_channels, mid_channels, 3, norm), attention,
                         ConvNormAct(mid_channels, mid_channels, 3, norm))


class DropoutClassifier(nn.Sequential):
    """Dropout2d(0.1) and a 1x1 conv (with bias) to K logits."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(nn.Dropout2d(DROPOUT), nn.Conv2d(in_channels, num_classes, 1))


class DANetHead(nn.Module):
    """The branches summed, then the classifier; in training also each branch's own classifier, if any."""

    def __init__(self, branches: dict[str, nn.Module], classifier: DropoutClassifier,
                 branch_classifiers: dict[str, DropoutClassifier]) -> None:
        super().__init__()
        self.branches = nn.ModuleDict(branches)
        self.classifier = classifier
        self.branch_classifiers = nn.ModuleDict(branch_classifiers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = {name: branch(x) for name, branch in self.branches.items()}  # (N, C4/4, H/8, W/8) each
        logits = {"out": self.classifier(sum(features.values()))}
        if self.training:
            logits.update({f"aux_{name}": head(features[name]) for name, head in self.branch_classifiers.items()})
        return logits


class DANet(nn.Module):
    def __init__(self, backbone: ResNetBackbone, head: DANetHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        _, s4 = self.backbone(x)  # (N, C4, H/8, W/8) at output stride 8
        return {name: _resize(logits, size) for name, logits in self.head(s4).items()}

    def fusion_modules(self) -> list[nn.Module]:
        return []

    def lr_mult_modules(self) -> list[nn.Module]:
        """The authors' code trains the whole head at 10x the backbone's learning rate (``train.lr_mult``)."""
        return [self.head]


def build_danet(cfg: ModelConfig) -> DANet:
    """DANet or one of its Table 1 ablations from ``model.pam`` / ``model.cam`` (neither: the dilated FCN)."""
    norm = norm_act(cfg.norm)
    backbone = build_backbone(cfg)
    width = backbone.high_channels
    mid = width // 4  # 512 for R50/R101, as in the authors' code
    modules: dict[str, nn.Module] = {}
    if cfg.pam:
        modules["pam"] = PositionAttention(mid, cfg.pam_reduction)
    if cfg.cam:
        modules["cam"] = ChannelAttention(negated=cfg.cam_energy == "negated")
    branches: dict[str, nn.Module] = {name: AttentionBranch(width, mid, module, norm) for name, module in modules.items()}
    if not branches:
        branches = {"fcn": ConvNormAct(width, mid, 3, norm)}
    extra = {name: DropoutClassifier(mid, cfg.num_classes) for name in branches} if cfg.branch_heads and len(branches) > 1 else {}
    return DANet(backbone, DANetHead(branches, DropoutClassifier(mid, cfg.num_classes), extra))
