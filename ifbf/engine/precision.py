"""The GPU fast path of training: ``train.amp``, ``train.channels_last`` and ``train.compile``.

- amp: ``bf16`` autocasts on CUDA and on CPU; ``fp16`` on CUDA only (with a GradScaler; on CPU it trains
  in fp32 with a note); ``none``/``off`` is fp32. Norm layers run in float32 under autocast: BatchNorm by
  autocast's own rules, InPlace-ABN through the pre-hook of ``models.norm`` (its kernels need it).
- channels_last: model and input batches in NHWC memory (faster convolutions on tensor cores).
- compile: ``torch.compile`` of the (possibly DDP-wrapped) network; checkpoints keep the plain model's
  state dict, so a compiled run resumes uncompiled and back.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device``; None means fp32 (off, or fp16 off CUDA)."""
    dtype = AMP_DTYPES.get(amp)
    if dtype is torch.float16 and device.type != "cuda":
        return None
    return dtype


def autocast(amp: str, device: torch.device) -> AbstractContextManager:
    dtype = amp_dtype(amp, device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def compile_net(net: nn.Module, enabled: bool, backend: str = "inductor") -> nn.Module:
    """``torch.compile(net)`` when enabled; InPlace-ABN's extension calls run eagerly between graphs."""
    return torch.compile(net, backend=backend) if enabled else net
