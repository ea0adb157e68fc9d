"""Losses of section 3.4 against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from ifbf.config import BASE_CONFIG, load_config
from ifbf.engine.losses import ohem_thresh_ce, ohem_topk_ce, segmentation_loss, total_loss

# 1 image, 2 classes, 1 x 6 pixels; logits chosen so the true-class probabilities are known exactly.
PROBS = [0.9, 0.8, 0.6, 0.3, 0.75, 0.5]  # true-class probability per pixel
TARGET = torch.tensor([[[0, 1, 0, 1, 0, 255]]])  # last pixel ignored


def _logits() -> torch.Tensor:
    logits = torch.zeros(1, 2, 1, 6)
    for i, (p, t) in enumerate(zip(PROBS, TARGET.flatten().tolist())):
        t = 0 if t == 255 else t
        logits[0, t, 0, i] = math.log(p / (1 - p))  # softmax over (x, 0) gives p for the true class
    return logits


def _ce(p: float) -> float:
    return -math.log(p)


def test_logits_encode_the_probabilities():
    probs = torch.softmax(_logits(), 1)
    for i, (p, t) in enumerate(zip(PROBS[:5], TARGET.flatten().tolist()[:5])):
        assert probs[0, t, 0, i].item() == pytest.approx(p, abs=1e-6)


def test_ohem_thresh_keeps_pixels_under_0_7():
    # valid probs: 0.9 0.8 0.6 0.3 0.75 -> below 0.7: 0.6 and 0.3; min_kept 1 does not raise the threshold
    expected = (_ce(0.6) + _ce(0.3)) / 2
    assert ohem_thresh_ce(_logits(), TARGET, 0.7, 1).item() == pytest.approx(expected, rel=1e-5)


def test_ohem_thresh_min_kept_raises_the_threshold():
    # min_kept 3: the 3rd smallest probability is 0.75 > 0.7, so pixels with p <= 0.75 are kept
    expected = (_ce(0.6) + _ce(0.3) + _ce(0.75)) / 3
    assert ohem_thresh_ce(_logits(), TARGET, 0.7, 3).item() == pytest.approx(expected, rel=1e-5)


def test_ohem_thresh_keeps_all_when_fewer_valid_than_min_kept():
    expected = sum(_ce(p) for p in PROBS[:5]) / 5
    assert ohem_thresh_ce(_logits(), TARGET, 0.7, 100).item() == pytest.approx(expected, rel=1e-5)


def test_ohem_topk_keeps_the_hardest_three_quarters():
    # eq. (7): 5 valid pixels -> keep int(5 * 0.75) = 3 with the largest CE: p = 0.3, 0.6, 0.75
    expected = (_ce(0.3) + _ce(0.6) + _ce(0.75)) / 3
    assert ohem_topk_ce(_logits(), TARGET, 0.75).item() == pytest.approx(expected, rel=1e-5)


def test_plain_ce_ignores_255():
    cfg = load_config(BASE_CONFIG, ["train.ohem=none"]).train
    expected = sum(_ce(p) for p in PROBS[:5]) / 5
    assert segmentation_loss(_logits(), TARGET, cfg).item() == pytest.approx(expected, rel=1e-5)


def test_all_ignored_gives_zero_with_gradient():
    logits = _logits().requires_grad_()
    loss = ohem_thresh_ce(logits, torch.full_like(TARGET, 255), 0.7, 10)
    loss.backward()
    assert loss.item() == 0 and logits.grad is not None


def test_total_loss_is_equation_8():
    cfg = load_config(BASE_CONFIG, ["train.ohem=none", "train.aux_weight=0.3"]).train
    out, aux = _logits(), _logits() * 0.5
    parts = total_loss({"out": out, "aux": aux}, TARGET, cfg)
    assert parts["total"].item() == pytest.approx(parts["out"].item() + 0.3 * parts["aux"].item(), rel=1e-6)
    assert total_loss({"out": out}, TARGET, cfg)["total"].item() == pytest.approx(parts["out"].item())


def test_gradient_flows_only_through_kept_pixels():
    logits = _logits().requires_grad_()
    ohem_thresh_ce(logits, TARGET, 0.7, 1).backward()
    touched = logits.grad.abs().sum(1).flatten() > 0
    assert touched.tolist() == [False, False, True, True, False, False]
