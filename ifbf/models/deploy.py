"""Inference-only rewrites used when measuring deployment latency (``ifbf cost``, bench/)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ifbf.models.blocks import BalancedFusion
from ifbf.models.ifbfnet import SkipDecoder, SpatialMerge


def _leading_bn(module: nn.Module) -> tuple[nn.Module, str] | None:
    """(module, "0") when ``module`` is a Sequential that starts with a BatchNorm (our norm + act blocks)."""
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[0], nn.modules.batchnorm._BatchNorm):
        return module, "0"
    return None


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm that directly follows a Conv2d folded into
    that conv (torchvision's conv/bn pairs and our conv + (bn, relu) blocks). Outputs equal the original's
    up to float rounding; InPlace-ABN layers are left alone."""
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        children = list(parent._modules.items())
        for (name, conv), (next_name, nxt) in zip(children, children[1:]):
            if not isinstance(conv, nn.Conv2d):
                continue
            if isinstance(nxt, nn.modules.batchnorm._BatchNorm):
                holder, key, bn = parent, next_name, nxt
            elif (found := _leading_bn(nxt)) is not None:
                holder, key = found
                bn = holder._modules[key]
            else:
                continue
            parent._modules[name] = fuse_conv_bn_eval(conv, bn)
            holder._modules[key] = nn.Identity()
    return model


class FoldedFusionConv(nn.Module):
    """``conv((1 + W) ⊙ X)`` computed as ``(K · diag(1 + W)) * X`` (eq. 4): the balance weights scale the
    convolution's input channels instead of the feature map, saving a full pass over it."""

    def __init__(self, fusion: BalancedFusion, conv: nn.Conv2d) -> None:
        super().__init__()
        self.fusion, self.conv = fusion, conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1 + self.fusion.weights(x)  # (N, C, 1, 1)
        outs = [
            F.conv2d(x[i : i + 1], self.conv.weight * scale[i].view(1, -1, 1, 1), self.conv.bias, self.conv.stride,
                     self.conv.padding, self.conv.dilation)
            for i in range(x.shape[0])
        ]
        return torch.cat(outs) if len(outs) > 1 else outs[0]


class FoldedSpatialMerge(nn.Module):
    """Fusion 2 and the head's first 1x1 conv without materialising the 384-channel concat:
    ``K * ((1 + W) ⊙ (x ‖ s)) = K_x · diag(1 + W_x) * x + K_s · diag(1 + W_s) * s``."""

    def __init__(self, stream: nn.Module, fusion: BalancedFusion, conv: nn.Conv2d) -> None:
        super().__init__()
        self.stream, self.fusion, self.conv = stream, fusion, conv

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        s = self.stream(image)
        pooled = torch.cat([x.mean((2, 3), keepdim=True), s.mean((2, 3), keepdim=True)], 1)
        scale = 1 + torch.sigmoid(self.fusion.weight_conv(pooled))  # (N, Cx + Cs, 1, 1)
        cx = x.shape[1]
        outs = []
        for i in range(x.shape[0]):
            w = self.conv.weight * scale[i].view(1, -1, 1, 1)
            outs.append(F.conv2d(x[i : i + 1], w[:, :cx], self.conv.bias) + F.conv2d(s[i : i + 1], w[:, cx:]))
        return torch.cat(outs) if len(outs) > 1 else outs[0]


PASS_THROUGH = (nn.Identity, nn.modules.dropout._DropoutNd)  # no-ops in eval mode


def _leading_conv(module: nn.Module) -> tuple[nn.Sequential, str] | None:
    """(parent, name) of the Conv2d that ``module`` applies first, however deep its blocks nest and behind
    eval-time no-ops such as a dropout; None when something else comes first (nothing to fold into)."""
    if not isinstance(module, nn.Sequential):
        return None
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d):
            return module, name
        if not isinstance(child, PASS_THROUGH):
            return _leading_conv(child)
    return None


def fold_fusions(model: nn.Module) -> nn.Module:
    """Fold both balanced fusions (placement "concat") into the convolutions that follow them: the decoder's
    first conv and the classifier's (where one of them does not start with a conv, that fusion stays)."""
    decoder = getattr(model, "decoder", None)
    if not isinstance(decoder, SkipDecoder):
        return model
    if isinstance(decoder.pre_fusion, BalancedFusion) and (lead := _leading_conv(decoder.convs)) is not None:
        holder, key = lead
        holder._modules[key] = FoldedFusionConv(decoder.pre_fusion, holder._modules[key])
        decoder.pre_fusion = nn.Identity()
    merge = decoder.spatial
    if (isinstance(merge, SpatialMerge) and isinstance(merge.fusion, BalancedFusion)
            and isinstance(merge.reduce, nn.Identity) and (lead := _leading_conv(model.classifier)) is not None):
        holder, key = lead
        decoder.spatial = FoldedSpatialMerge(merge.stream, merge.fusion, holder._modules[key])
        holder._modules[key] = nn.Identity()
    return model


def inference_ready(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """The deployment form: BatchNorm folded, balance weights folded into the next convolutions."""
    model = fold_fusions(fold_batchnorm(model))
    return model.to(memory_format=torch.channels_last) if channels_last else model
