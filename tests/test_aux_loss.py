"""The aux-loss switch against a direct torch computation of the CCNet criterion (CriterionOhemDSN):
OHEM (thresh 0.7, min_kept) on the main output, plain cross-entropy x lambda on the aux head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ifbf.config import BASE_CONFIG, load_config
from ifbf.experiments import load_preset
from ifbf.engine.losses import total_loss


def _batch(seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    outputs = {"out": torch.randn(2, 5, 8, 8, generator=g), "aux": torch.randn(2, 5, 8, 8, generator=g)}
    target = torch.randint(0, 5, (2, 8, 8), generator=g)
    target[0, :2] = 255  # some ignored pixels
    return outputs, target


def _ccnet_ohem(logits: torch.Tensor, target: torch.Tensor, thresh: float, min_kept: int) -> torch.Tensor:
    """The OHEM rule of paper-notes ambiguity 2, written directly: softmax probability of the true
    class, threshold raised to the min_kept-th smallest, mean CE over the kept pixels. (CCNet searches
    the threshold on a 1/8-downsampled prediction with min_kept/64; ifbf searches at full size.)"""
    valid = target != 255
    prob = F.softmax(logits, 1).gather(1, target.clamp(max=logits.shape[1] - 1).unsqueeze(1)).squeeze(1)[valid]
    threshold = max(thresh, prob.sort().values[min(min_kept, prob.numel()) - 1].item())
    kept = valid.clone()
    kept[valid] = prob <= threshold
    return F.cross_entropy(logits, torch.where(kept, target, 255), ignore_index=255)


def test_aux_without_ohem_is_plain_ce_times_lambda():
    outputs, target = _batch()
    cfg = load_config(BASE_CONFIG, ["train.aux_ohem=false", "train.ohem_min_kept=20"]).train
    parts = total_loss(outputs, target, cfg)
    main = _ccnet_ohem(outputs["out"], target, 0.7, 20)
    aux = F.cross_entropy(outputs["aux"], target, ignore_index=255)
    assert parts["out"].item() == pytest.approx(main.item(), rel=1e-5)
    assert parts["aux"].item() == pytest.approx(aux.item(), rel=1e-5)
    assert parts["total"].item() == pytest.approx((main + 0.4 * aux).item(), rel=1e-5)


def test_aux_with_ohem_is_the_base_default():
    outputs, target = _batch(1)
    cfg = load_config(BASE_CONFIG, ["train.ohem_min_kept=20"]).train
    assert cfg.aux_ohem is True
    parts = total_loss(outputs, target, cfg)
    aux = _ccnet_ohem(outputs["aux"], target, 0.7, 20)
    assert parts["aux"].item() == pytest.approx(aux.item(), rel=1e-5)
    assert parts["aux"].item() != pytest.approx(F.cross_entropy(outputs["aux"], target, ignore_index=255).item())


def test_paper_preset_follows_the_ccnet_criterion():
    cfg = load_config(BASE_CONFIG, list(load_preset("paper").overrides))
    assert cfg.train.aux_ohem is False and cfg.train.ohem == "thresh"
    smoke = load_config(BASE_CONFIG, list(load_preset("smoke").overrides))
    assert smoke.train.aux_ohem is True  # smoke runs unchanged
