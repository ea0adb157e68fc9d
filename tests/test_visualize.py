"""Figures 5 and 6 and the cost table: real files with real content, hooks on the right modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cityscapesscripts.helpers.labels import trainId2label
from PIL import Image

from conftest import TINY_TRAIN
from ifbf.commands.cli import main
from ifbf.config import BASE_CONFIG, load_config
from ifbf.data.cityscapes import resolve_root
from ifbf.data.labels import NUM_CLASSES, PALETTE
from ifbf.engine.checkpoint import save_checkpoint
from ifbf.engine.run import run
from ifbf.engine.train import build_training
from ifbf.experiments import load_paper
from ifbf.models import build_model
from ifbf.engine.visualize import FeatureHooks, colorize, difference_outline
from ifbf.store.rundir import RunDir


def test_palette_is_cityscapes():
    for train_id in range(NUM_CLASSES):
        assert tuple(PALETTE[train_id]) == trainId2label[train_id].color
    assert colorize(np.array([[0, 255]]))[0, 1].tolist() == [0, 0, 0]


def test_difference_outline_marks_only_region_borders():
    a = np.zeros((9, 9), np.uint8)
    b = a.copy()
    b[2:7, 2:7] = 1  # a 5x5 square differs
    outline = difference_outline(a, b)
    assert outline.sum() == 16 and not outline[4, 4] and outline[2, 2] and not outline[0, 0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vis")
    run(load_config(BASE_CONFIG, TINY_TRAIN), root / "ifbfnet", progress=False)
    run(load_config(BASE_CONFIG, [*TINY_TRAIN, "model.balanced_fusion=false", "model.spatial_stream=false"]),
        root / "plain", progress=False)
    return root


def _not_blank(path) -> np.ndarray:
    arr = np.asarray(Image.open(path).convert("RGB"))
    assert arr.std() > 10 and len(np.unique(arr.reshape(-1, 3), axis=0)) > 20
    return arr


def test_predictions_two_runs(runs, tmp_path):
    out = tmp_path / "fig6"
    assert main(["visualize", "predictions", "--run", str(runs / "ifbfnet"), "--compare", str(runs / "plain"),
                 "--n", "3", "--out", str(out)]) == 0
    files = sorted(out.glob("*.png"))
    assert len(files) == 3
    arr = _not_blank(files[0])
    assert arr.shape == (64 + 14, 5 * 128 + 4 * 4, 3)  # five panels of 64x128 under a title row
    yellow = (arr == [255, 230, 0]).all(-1)
    assert yellow[:, 4 * (128 + 4):].any() and not yellow[:, : 4 * (128 + 4)].any()


def test_predictions_one_run(runs, tmp_path):
    assert main(["visualize", "predictions", "--run", str(runs / "ifbfnet"), "--n", "1", "--out", str(tmp_path)]) == 0
    arr = _not_blank(next(tmp_path.glob("*.png")))
    assert arr.shape == (64 + 14, 3 * 128 + 2 * 4, 3)


def test_hooks_capture_what_they_claim():
    torch.manual_seed(0)
    model = build_model(load_config(BASE_CONFIG, ["model.norm=bn", "model.backbone=resnet18"]).model).eval()
    x = torch.randn(1, 3, 64, 96)
    hooks = FeatureHooks(model)
    feats = hooks.capture(x)
    hooks.remove()
    with torch.no_grad():
        s1, s4 = model.backbone(x)
        deep = model.aspp(model.reduce(s4))
        low = model.decoder.low_conv(s1)
        concat = torch.cat([F.interpolate(deep, size=low.shape[-2:], mode="bilinear", align_corners=False), low], 1)
        fusion = model.fusion_modules()[0]
        assert torch.equal(feats.low, s1[0])
        assert torch.allclose(feats.deep, F.interpolate(deep, size=s1.shape[-2:], mode="bilinear", align_corners=False)[0])
        assert torch.allclose(feats.concat, concat[0])
        assert torch.allclose(feats.fused, fusion(concat)[0])
        assert torch.allclose(feats.weights, fusion.weights(concat).flatten())
    assert feats.high_channels == 256 and feats.weights.shape == (320,)
    assert not model.backbone.layer1._forward_hooks  # hooks are removed again


def test_features_figure(runs, tmp_path):
    image = next((resolve_root(load_config(BASE_CONFIG, TINY_TRAIN).data) / "leftImg8bit" / "val").glob("*/*.png"))
    assert main(["visualize", "features", "--run", str(runs / "ifbfnet"), "--image", str(image), "--out", str(tmp_path)]) == 0
    _not_blank(tmp_path / f"{image.stem}_features.png")
    _not_blank(tmp_path / f"{image.stem}_fusion_weights.png")
    plain = tmp_path / "plain"
    assert main(["visualize", "features", "--run", str(runs / "plain"), "--image", str(image), "--out", str(plain)]) == 0
    assert (plain / f"{image.stem}_features.png").is_file() and not (plain / f"{image.stem}_fusion_weights.png").exists()


def test_features_need_a_skip_connection(runs, tmp_path, capsys):
    no_skip = tmp_path / "noskip"
    run(load_config(BASE_CONFIG, [*TINY_TRAIN, "model.skip=false", "model.balanced_fusion=false",
                                  "model.spatial_stream=false", "train.iters=3"]), no_skip, progress=False)
    image = next((resolve_root(load_config(BASE_CONFIG, TINY_TRAIN).data) / "leftImg8bit" / "val").glob("*/*.png"))
    assert main(["visualize", "features", "--run", str(no_skip), "--image", str(image), "--out", str(tmp_path)]) == 2
    assert "no skip connection" in capsys.readouterr().err


def test_features_are_ifbfnets_figure_only(tmp_path, capsys):
    """A DANet run (its config and a checkpoint of its tiny model): the feature figure is refused in one line
    naming the architecture it is drawn for and the run's, exit 2, nothing written."""
    cfg = load_config(load_paper("danet").base, TINY_TRAIN)
    run_dir = RunDir(tmp_path / "danet")
    run_dir.claim(cfg)
    save_checkpoint(run_dir.checkpoint, cfg, 1, *build_training(cfg, torch.device("cpu")))
    image = tmp_path / "frame.png"
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(image)
    assert main(["visualize", "features", "--run", str(run_dir.path), "--image", str(image), "--out",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "exists for model.arch=ifbfnet only; this run's model.arch is danet" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cost_table(tmp_path):
    assert main(["profile", "--table", "3", "--preset", "smoke", "--size", "64", "128", "--latency-size", "64", "128",
                 "--repeat", "1", "--results", str(tmp_path)]) == 0
    text = (tmp_path / "smoke" / "cost_table3.md").read_text()
    assert text.startswith("# Cost of Table 3's rows: ")
    rows = [line for line in text.splitlines() if line.startswith("| C=")]
    assert len(rows) == 6
    params = [float(r.split("|")[3]) for r in rows]
    assert params == sorted(params) and params[0] < params[-1]  # wider spatial stream, more parameters
