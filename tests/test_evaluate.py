"""Inference and evaluation: multi-scale + flip averaging, sliding windows, the confusion matrix,
``ifbf evaluate`` and ``ifbf export`` (scored back with ``ifbf score``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from conftest import TINY_TRAIN
from ifbf.commands.cli import main
from ifbf.config import BASE_CONFIG, EvalConfig, load_config
from ifbf.data.labels import TRAIN_TO_ID
from ifbf.engine.evaluate import confusion, predict
from ifbf.engine.run import run
from ifbf.engine.metrics import iou_from_train_confusion
from ifbf.engine.score import score


class PixelModel(nn.Module):
    """A 1x1-conv 'segmenter': its output at a pixel depends on that pixel only."""

    def __init__(self, k: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, k, 1)

    def forward(self, x):
        return {"out": self.conv(x)}


def test_multiscale_flip_averages_probabilities():
    model, x = PixelModel(), torch.randn(1, 3, 8, 12)
    cfg = EvalConfig(scales=(0.5, 1.0), flip=True)
    expected = 0
    for s in (0.5, 1.0):
        xs = x if s == 1.0 else F.interpolate(x, size=(4, 6), mode="bilinear", align_corners=False)
        for flip in (False, True):
            logits = model(xs.flip(-1) if flip else xs)["out"]
            logits = logits.flip(-1) if flip else logits
            expected = expected + torch.softmax(F.interpolate(logits, size=(8, 12), mode="bilinear", align_corners=False), 1)
    assert torch.allclose(predict(model, x, cfg, 4), expected / 4, atol=1e-6)


@pytest.mark.parametrize("window", [(5, 7), (8, 12), (16, 16)])
def test_sliding_window_equals_whole_image_for_a_pixelwise_model(window):
    model, x = PixelModel(), torch.randn(1, 3, 11, 17)
    whole = predict(model, x, EvalConfig(scales=(1.0,)), 4)
    windowed = predict(model, x, EvalConfig(scales=(1.0,), window=window), 4)
    assert torch.allclose(whole, windowed, atol=1e-6)


def test_confusion_and_iou_by_hand():
    target = torch.tensor([[0, 0, 1, 1, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 0, 2]])
    conf = confusion(pred, target, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    iou = iou_from_train_confusion(conf.numpy())
    assert iou.tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = load_config(BASE_CONFIG, TINY_TRAIN)
    run(cfg, out, progress=False)
    return out


def test_evaluate_records_each_setting(trained_run, capsys):
    before = json.loads((trained_run / "metrics.json").read_text())
    assert main(["evaluate", "--run", str(trained_run), "--scales", "0.75", "1.0", "--flip", "--no-progress"]) == 0
    assert "mIoU" in capsys.readouterr().out
    after = json.loads((trained_run / "metrics.json").read_text())
    assert len(after["evaluations"]) == 2
    assert after["miou"] == before["miou"]  # the headline (config's own eval) is kept
    new = [e for e in after["evaluations"].values() if e["eval"]["flip"]][0]
    assert new["eval"]["scales"] == [0.75, 1.0] and 0 <= new["miou"] <= 1


def test_export_writes_label_ids_that_score_like_evaluate(trained_run, tmp_path):
    out = tmp_path / "export"
    assert main(["export", "--run", str(trained_run), "--split", "val", "--out", str(out), "--zip", "--no-progress"]) == 0
    files = sorted(out.glob("*_leftImg8bit.png"))
    assert len(files) == 4 and (tmp_path / "export.zip").is_file()
    ids = np.unique(np.concatenate([np.asarray(Image.open(f)).ravel() for f in files]))
    assert set(ids.tolist()) <= set(TRAIN_TO_ID[:19].tolist())
    cfg = load_config(trained_run / "config.yaml")
    from ifbf.data.cityscapes import resolve_root

    scored = score(resolve_root(cfg.data), "val", out, workers=1)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert scored["miou"] == pytest.approx(metrics["miou"], abs=1e-9)


def test_export_never_overwrites(trained_run, tmp_path, capsys):
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.png").write_bytes(b"x")
    assert main(["export", "--run", str(trained_run), "--split", "test", "--out", str(out), "--no-progress"]) == 2
    assert "is not empty" in capsys.readouterr().err and (out / "keep.png").read_bytes() == b"x"


def test_evaluate_without_checkpoint(tmp_path, capsys):
    assert main(["evaluate", "--run", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
