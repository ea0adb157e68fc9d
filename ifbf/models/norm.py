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

import torch
import torch.distributed as dist
from torch import nn

from ifbf.errors import IfbfError

NormFactory = Callable[[int], nn.Module]

IABN_INSTALL = (
    "pip install setuptools_scm && pip install --no-build-isolation inplace-abn==1.1.0 "
    "(torch must be installed first; scripts/install.sh does this), or use model.norm=bn"
)


def _reduce_statistics(all_mean: torch.Tensor, all_var: torch.Tensor, all_count: torch.Tensor):
    """Pool per-process batch statistics (biased variances) into global ones.

    Why: inplace-abn 1.1.0 implements ``reduce_statistics`` only in its CUDA backend, so InPlaceABNSync
    fails in a multi-process CPU (gloo) run. This is the same pooling, in torch; it is installed only
    when the compiled backend lacks it.
    """
    count = all_count.to(all_mean.dtype)  # (world, 1)
    total = count.sum(0)
    mean = (all_mean * count).sum(0) / total
    var = ((all_var + (all_mean - mean) ** 2) * count).sum(0) / total
    return mean, var, total.to(all_count.dtype)


def _inplace_abn():
    try:  # an optional, compiled dependency: imported only when a config asks for it
        import inplace_abn
        from inplace_abn import _backend
    except ImportError:
        raise IfbfError(f"model.norm asks for InPlace-ABN, but the inplace-abn package is not installed: {IABN_INSTALL}") from None
    if not hasattr(_backend, "reduce_statistics"):  # CPU-only build: see _reduce_statistics
        _backend.reduce_statistics = _reduce_statistics
    return inplace_abn


def _float32_input(module: nn.Module, args: tuple) -> tuple | None:
    """Forward pre-hook: give InPlace-ABN a float32 input under autocast (bf16/fp16 activations).

    Why: inplace-abn's kernels require the input to have the dtype of its (float32) weight and statistics,
    and autocast does not see them (they are extension calls, not torch ops), so a bf16 activation from an
    autocast convolution fails with "weight is not compatible with x". The norm then runs in float32, as
    BatchNorm does under autocast; the next convolution casts its output back down. The in-place saving is
    kept for float32 training; under autocast the cast is the one extra copy.
    """
    x = args[0]
    if x.dtype in (torch.float16, torch.bfloat16):
        return (x.float(), *args[1:])
    return None


def _fp32_under_autocast(factory: NormFactory) -> NormFactory:
    def build(channels: int) -> nn.Module:
        module = factory(channels)
        module.register_forward_pre_hook(_float32_input)
        return module

    return build


def _bn_relu(norm: type[nn.Module], channels: int) -> nn.Module:
    return nn.Sequential(norm(channels), nn.ReLU(inplace=True))


def norm_act(kind: str) -> NormFactory:
    """Factory for a norm + activation module of ``channels`` channels."""
    if kind == "bn":
        return functools.partial(_bn_relu, nn.BatchNorm2d)
    if kind == "syncbn":
        return functools.partial(_bn_relu, nn.SyncBatchNorm)
    if kind == "inplace_abn":
        return _fp32_under_autocast(functools.partial(_inplace_abn().InPlaceABN, activation="leaky_relu",
                                                      activation_param=0.01))
    if kind == "inplace_abn_sync":
        return _fp32_under_autocast(functools.partial(_inplace_abn().InPlaceABNSync, activation="leaky_relu",
                                                      activation_param=0.01, group=_world_group()))
    raise IfbfError(f"model.norm: unknown norm {kind!r}")


def _world_group():
    """The process group InPlaceABNSync must synchronise over.

    Why: inplace-abn's default ``group=distributed.group.WORLD`` is evaluated when the library is imported,
    before any process group exists, so it is None and the layers silently use per-process statistics.
    The builder runs after ``init_process_group``, so the group is taken here, explicitly.
    """
    return dist.group.WORLD if dist.is_available() and dist.is_initialized() else None


def backbone_norm(kind: str) -> NormFactory:
    """BatchNorm2d replacement (no activation) for torchvision's ResNet."""
    if kind == "bn":
        return nn.BatchNorm2d
    if kind == "syncbn":
        return nn.SyncBatchNorm
    if kind == "inplace_abn":
        return _fp32_under_autocast(functools.partial(_inplace_abn().InPlaceABN, activation="identity"))
    if kind == "inplace_abn_sync":
        return _fp32_under_autocast(functools.partial(_inplace_abn().InPlaceABNSync, activation="identity",
                                                      group=_world_group()))
    raise IfbfError(f"model.norm: unknown norm {kind!r}")
