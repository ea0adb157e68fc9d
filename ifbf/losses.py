"""Losses of section 3.4: cross-entropy with ignore 255, OHEM (two rules), main + λ·aux (eq. 8)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ifbf.config import TrainConfig

IGNORE = 255


def ohem_thresh_ce(logits: torch.Tensor, target: torch.Tensor, thresh: float, min_kept: int) -> torch.Tensor:
    """OHEM as in the CCNet / pytorch-segmentation-toolbox code line (paper-notes, ambiguity 2).

    A valid pixel is kept when its true-class probability is <= max(thresh, p_k), where p_k is the
    ``min_kept``-th smallest true-class probability in the batch, so at least ``min_kept`` pixels are
    kept even when fewer fall under ``thresh``; with fewer than ``min_kept`` valid pixels all are kept.
    The loss is the mean CE over the kept pixels.
    """
    pixel_ce = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none").flatten()
    valid_ce = pixel_ce[target.flatten() != IGNORE]
    if valid_ce.numel() == 0:
        return pixel_ce.sum() * 0.0
    if min_kept > valid_ce.numel():
        return valid_ce.mean()
    with torch.no_grad():
        prob = torch.exp(-valid_ce)  # true-class probability p = exp(-CE)
        threshold = torch.tensor(thresh, dtype=prob.dtype, device=prob.device)
        if min_kept > 0:
            threshold = torch.maximum(threshold, prob.kthvalue(min_kept).values)
        kept = prob <= threshold
    return valid_ce[kept].mean()


def ohem_topk_ce(logits: torch.Tensor, target: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """OHEM as equation (7): sort the valid pixels by CE and average the largest ``keep_ratio`` of them."""
    pixel_ce = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none").flatten()
    valid_ce = pixel_ce[target.flatten() != IGNORE]
    if valid_ce.numel() == 0:
        return pixel_ce.sum() * 0.0
    k = max(1, int(valid_ce.numel() * keep_ratio))
    return valid_ce.topk(k, sorted=False).values.mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    if cfg.ohem == "thresh":
        return ohem_thresh_ce(logits, target, cfg.ohem_thresh, cfg.ohem_min_kept)
    if cfg.ohem == "topk":
        return ohem_topk_ce(logits, target, cfg.ohem_keep_ratio)
    return F.cross_entropy(logits, target, ignore_index=IGNORE)


def total_loss(outputs: dict[str, torch.Tensor], target: torch.Tensor, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Equation (8): loss = l_out + λ·l_aux (both with the configured OHEM rule). Returns all parts."""
    parts = {"out": segmentation_loss(outputs["out"].float(), target, cfg)}
    if "aux" in outputs:
        parts["aux"] = segmentation_loss(outputs["aux"].float(), target, cfg)
    parts["total"] = parts["out"] + cfg.aux_weight * parts.get("aux", torch.zeros_like(parts["out"]))
    return parts
