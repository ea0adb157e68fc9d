"""Normalisation layers selected by ``model.norm``; resolved once, in the builder.

Two factories per kind:
- ``norm_act(kind)(channels)``: norm followed by its activation, for conv+norm+act blocks of the decoder.
  For InPlace-ABN this is one fused in-place module with leaky ReLU (slope 0.01, the library's default):
  the fused activation must be invertible, so plain ReLU is not available there.
- ``backbone_norm(kind)``: a BatchNorm2d replacement without activation, passed to torchvision's ResNet as
  ``norm_layer``. ResNet's own ReLUs then follow it (made out-of-place, as in the CCNet code line the
  paper's recipe comes from), so pretrained torchvision weights load unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

from ifbf.errors import IfbfError

NormFactory = Callable[[int], nn.Module]

IABN_INSTALL = (
    "pip install setuptools_scm && pip install --no-build-isolation inplace-abn==1.1.0 "
    "(torch must be installed first; scripts/install.sh does this), or use model.norm=bn"
)


def _inplace_abn():
    try:
        import inplace_abn
    except ImportError:
        raise IfbfError(f"model.norm asks for InPlace-ABN, but the inplace-abn package is not installed: {IABN_INSTALL}") from None
    return inplace_abn


def _bn_relu(norm: type[nn.Module], channels: int) -> nn.Module:
    return nn.Sequential(norm(channels), nn.ReLU(inplace=True))


def norm_act(kind: str) -> NormFactory:
    """Factory for a norm + activation module of ``channels`` channels."""
    if kind == "bn":
        return functools.partial(_bn_relu, nn.BatchNorm2d)
    if kind == "syncbn":
        return functools.partial(_bn_relu, nn.SyncBatchNorm)
    if kind == "inplace_abn":
        return functools.partial(_inplace_abn().InPlaceABN, activation="leaky_relu", activation_param=0.01)
    if kind == "inplace_abn_sync":
        return functools.partial(_inplace_abn().InPlaceABNSync, activation="leaky_relu", activation_param=0.01)
    raise IfbfError(f"model.norm: unknown norm {kind!r}")


def backbone_norm(kind: str) -> NormFactory:
    """BatchNorm2d replacement (no activation) for torchvision's ResNet."""
    if kind == "bn":
        return nn.BatchNorm2d
    if kind == "syncbn":
        return nn.SyncBatchNorm
    if kind == "inplace_abn":
        return functools.partial(_inplace_abn().InPlaceABN, activation="identity")
    if kind == "inplace_abn_sync":
        return functools.partial(_inplace_abn().InPlaceABNSync, activation="identity")
    raise IfbfError(f"model.norm: unknown norm {kind!r}")
