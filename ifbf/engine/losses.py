"""Losses of section 3.4: cross-entropy with ignore 255, OHEM (two rules), main + λ·aux (eq. 8)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ifbf.config import TrainConfig
from ifbf.data.labels import IGNORE
from ifbf.errors import TrainingDiverged


class NothingKept(TrainingDiverged):
    """OHEM kept no pixel of a batch that has valid ones: only NaN probabilities escape every threshold, so the
    logits are not finite. A mean over no pixel would read 0.0 and hide the divergence (engine.divergence)."""

    def __init__(self) -> None:
        super().__init__("OHEM kept no pixel of the batch (every true-class probability is NaN: the logits are "
                         "not finite)")


def global_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over the pixels of the whole global batch.

    DDP averages gradients over ranks, so dividing each rank's sum by (global count / world size) gives
    exactly the gradient of the single-process mean, even when ranks hold different numbers of valid pixels.
    The count is filled in on the device: ``torch.tensor(n, device=cuda)`` would be a blocking host-to-device
    copy, a sync per call (docs/performance.md).
    """
    count = torch.full((), float(values.numel()), device=values.device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return values.sum() / count.clamp_min(1.0)


def ohem_thresh_ce(logits: torch.Tensor, target: torch.Tensor, thresh: float, min_kept: int) -> torch.Tensor:
    """OHEM as in the CCNet / pytorch-segmentation-toolbox code line (paper-notes, ambiguity 2).

    A valid pixel is kept when its true-class probability is <= max(thresh, p_k), where p_k is the
    ``min_kept``-th smallest true-class probability in the batch, so at least ``min_kept`` pixels are
    kept even when fewer fall under ``thresh``; with fewer than ``min_kept`` valid pixels all are kept.
    The loss is the mean CE over the kept pixels. Under DDP the hard pixels are chosen per process
    (as in the reference code) and the mean is over all processes' kept pixels.
    """
    pixel_ce = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none").flatten()
    valid_ce = pixel_ce[target.flatten() != IGNORE]
    if valid_ce.numel() == 0:
        return global_mean(valid_ce)
    if min_kept > valid_ce.numel():
        return global_mean(valid_ce)
    with torch.no_grad():
        prob = torch.exp(-valid_ce)  # true-class probability p = exp(-CE)
        threshold = torch.full((), thresh, dtype=prob.dtype, device=prob.device)  # no host-to-device copy
        if min_kept > 0:
            threshold = torch.maximum(threshold, prob.kthvalue(min_kept).values)
        kept = prob <= threshold
    chosen = valid_ce[kept]  # its size is known here: the selection has synchronised already
    if chosen.numel() == 0:
        raise NothingKept()
    return global_mean(chosen)


def ohem_topk_ce(logits: torch.Tensor, target: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """OHEM as equation (7): sort the valid pixels by CE and average the largest ``keep_ratio`` of them."""
    pixel_ce = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none").flatten()
    valid_ce = pixel_ce[target.flatten() != IGNORE]
    if valid_ce.numel() == 0:
        return global_mean(valid_ce)
    k = max(1, int(valid_ce.numel() * keep_ratio))
    return global_mean(valid_ce.topk(k, sorted=False).values)


def plain_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the valid pixels of the global batch."""
    pixel_ce = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none").flatten()
    return global_mean(pixel_ce[target.flatten() != IGNORE])


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    if cfg.ohem == "thresh":
        return ohem_thresh_ce(logits, target, cfg.ohem_thresh, cfg.ohem_min_kept)
    if cfg.ohem == "topk":
        return ohem_topk_ce(logits, target, cfg.ohem_keep_ratio)
    return plain_ce(logits, target)


def total_loss(outputs: dict[str, torch.Tensor], target: torch.Tensor, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """loss = l_out + λ·l_aux, summed over every auxiliary output a model returns besides "out" (a deep
    supervision head's "aux", an attention branch's own classifier). Returns all parts.

    l_out uses the configured OHEM rule; each l_aux too with ``train.aux_ohem`` (ifbf's base default), or
    plain cross-entropy without it, as the CCNet code's CriterionOhemDSN (paper-notes, ambiguity 11).
    """
    parts = {"out": segmentation_loss(outputs["out"].float(), target, cfg)}
    for name in sorted(k for k in outputs if k != "out"):
        aux = outputs[name].float()
        parts[name] = segmentation_loss(aux, target, cfg) if cfg.aux_ohem else plain_ce(aux, target)
    parts["total"] = parts["out"] + cfg.aux_weight * sum(parts[k] for k in parts if k != "out")
    return parts
