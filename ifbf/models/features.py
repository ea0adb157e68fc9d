"""The feature maps of IFBFNet's Figure 5 (what the balanced fusion does), taken with forward hooks on the
model's own modules; ``ifbf visualize features`` draws them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ifbf.errors import IfbfError
from ifbf.models.ifbfnet import IFBFNet, SkipDecoder

FIGURE_ARCH = "ifbfnet"  # the model.arch whose modules the hooks know


def require_figure_arch(arch: str) -> None:
    """The feature figure is IFBFNet's: a run of another ``model.arch`` is refused in one line."""
    if arch != FIGURE_ARCH:
        raise IfbfError(f"the feature figure (IFBFNet's Figure 5 hooks, ifbf/models/features.py) exists for "
                        f"model.arch={FIGURE_ARCH} only; this run's model.arch is {arch} (`ifbf visualize "
                        "predictions` draws any run)")


@dataclass
class FusionFeatures:
    """Figure 5's four maps for one image and the first fusion module's weights."""

    low: torch.Tensor  # S1: backbone stage 1 output (C1, H/4, W/4)
    deep: torch.Tensor  # ASPP output upsampled to H/4 (256, H/4, W/4)
    concat: torch.Tensor  # the input of fusion 1 (plain concatenation)
    fused: torch.Tensor | None  # the output of fusion 1 (None without balanced fusion)
    weights: torch.Tensor | None  # W = W_h || W_l of fusion 1, (C,)
    high_channels: int  # how many leading channels of W are W_h


class FeatureHooks:
    """Forward hooks on the modules Figure 5 shows; ``capture(image)`` returns what they saw."""

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, IFBFNet):  # a caller's bug: ``require_figure_arch`` refuses such a run first
            raise TypeError(f"FeatureHooks needs an IFBFNet, got a {type(model).__name__}")
        if not isinstance(model.decoder, SkipDecoder):
            raise IfbfError("this run has no skip connection (model.skip=false): there is no fusion to show")
        self.model, self.seen, self.handles = model, {}, []
        decoder = model.decoder
        fusion = model.fusion_modules()[0] if model.fusion_modules() else None
        self._hook(model.backbone.layer1, "low")
        self._hook(model.aspp, "deep")
        # fusion 1 acts on the concat ("concat" placement) or on the convs' output ("after_convs")
        target = fusion if fusion is not None else decoder.pre_fusion
        self.handles.append(target.register_forward_hook(self._fusion_hook))
        self.fusion = fusion

    def _hook(self, module: nn.Module, key: str) -> None:
        self.handles.append(module.register_forward_hook(lambda m, i, o: self.seen.__setitem__(key, o.detach())))

    def _fusion_hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.seen["concat"] = inputs[0].detach()
        self.seen["fused"] = output.detach() if self.fusion is not None else None
        self.seen["weights"] = self.fusion.weights(inputs[0]).detach().flatten() if self.fusion is not None else None

    @torch.no_grad()
    def capture(self, image: torch.Tensor) -> FusionFeatures:
        self.seen.clear()
        self.model.eval()(image)
        low, concat = self.seen["low"][0], self.seen["concat"][0]
        deep = nn.functional.interpolate(self.seen["deep"], size=low.shape[-2:], mode="bilinear", align_corners=False)[0]
        fused = self.seen["fused"][0] if self.seen["fused"] is not None else None
        high = deep.shape[0] if concat.shape[0] == deep.shape[0] + 64 else concat.shape[0]
        return FusionFeatures(low, deep, concat, fused, self.seen["weights"], high)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
