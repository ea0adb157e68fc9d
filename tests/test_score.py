"""``ifbf score`` against cityscapesscripts' evalPixelLevelSemanticLabeling on the same files."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cityscapes_reference import reference_scores
from conftest import SHARED_SAMPLE
from ifbf.commands.cli import main
from ifbf.data.labels import CLASS_NAMES, NAME_TO_ID
from ifbf.engine.score import ScoreError, score


def _write_predictions(gt_root, split, out, seed=0, drop_class=None, nested=False):
    """Noisy predictions: the ground truth with blocks of random label ids (void ones included)."""
    rng = np.random.default_rng(seed)
    for gt in sorted((gt_root / "gtFine" / split).glob("*/*_gtFine_labelIds.png")):
        pred = np.asarray(Image.open(gt)).copy()
        h, w = pred.shape
        for _ in range(30):
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
            pred[y : y + rng.integers(2, 9), x : x + rng.integers(2, 9)] = rng.integers(0, 34)
        if drop_class:
            pred[pred == NAME_TO_ID[drop_class]] = NAME_TO_ID["road"]
        key = gt.name[: -len("_gtFine_labelIds.png")]
        folder = out / gt.parent.name if nested else out
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pred).save(folder / f"{key}_leftImg8bit_pred.png")
    return out


def _assert_same(ours: dict, ref: dict):
    for name in CLASS_NAMES:
        if ours["iou"][name] is None:
            assert math.isnan(ref[name]), name
        else:
            assert ours["iou"][name] == pytest.approx(ref[name], abs=1e-12), name
    assert ours["miou"] == pytest.approx(ref["miou"], abs=1e-12)


@pytest.mark.parametrize("workers", [1, 2])
def test_equals_cityscapesscripts_on_synthetic(synth_root, tmp_path, workers):
    pred = _write_predictions(synth_root, "train", tmp_path / "pred", nested=True)
    ours = score(synth_root, "train", pred, workers=workers)
    assert ours["images"] == 8
    _assert_same(ours, reference_scores(synth_root, "train", pred, instances=True))
    assert 0.3 < ours["miou"] < 0.99  # noisy, not perfect: the comparison is not trivial


def test_absent_class_is_nan_like_cityscapesscripts(synth_root, tmp_path):
    """A class missing from ground truth *and* predictions is NaN and left out of the mean."""
    root = tmp_path / "gt"
    for kind in ("gtFine", "leftImg8bit"):
        for src in (synth_root / kind / "val").rglob("*.png"):
            dst = root / kind / "val" / src.relative_to(synth_root / kind / "val")
            dst.parent.mkdir(parents=True, exist_ok=True)
            arr = np.asarray(Image.open(src)).copy()
            if src.name.endswith("labelIds.png"):
                arr[arr == NAME_TO_ID["train"]] = NAME_TO_ID["road"]
            Image.fromarray(arr).save(dst)
    pred = _write_predictions(root, "val", tmp_path / "pred", drop_class="train")
    pred_arrays = [np.asarray(Image.open(p)) for p in pred.glob("*.png")]
    for p, arr in zip(pred.glob("*.png"), pred_arrays):
        arr = arr.copy()
        arr[arr == NAME_TO_ID["train"]] = NAME_TO_ID["road"]
        Image.fromarray(arr).save(p)
    ours = score(root, "val", pred, workers=1)
    assert ours["iou"]["train"] is None
    _assert_same(ours, reference_scores(root, "val", pred))


@pytest.mark.skipif(not SHARED_SAMPLE.is_dir(), reason="the real Cityscapes sample in ../shared is absent")
def test_equals_cityscapesscripts_on_the_real_sample(tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    gt = np.asarray(Image.open(SHARED_SAMPLE / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"))
    noisy = np.roll(gt, 3, axis=1)  # a prediction off by 3 pixels
    Image.fromarray(noisy).save(pred / "frankfurt_000000_000294_leftImg8bit.png")
    ours = score(SHARED_SAMPLE, "val", pred, workers=1)
    _assert_same(ours, reference_scores(SHARED_SAMPLE, "val", pred, instances=True))
    assert 0.3 < ours["miou"] < 1


def test_cli_json_and_no_torch_import(synth_root, tmp_path):
    pred = _write_predictions(synth_root, "val", tmp_path / "pred")
    code = ("import sys; from ifbf.commands.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'score imported torch'; sys.exit(rc)")
    out = tmp_path / "r.json"
    subprocess.run([sys.executable, "-c", code, "score", "--gt", str(synth_root), "--split", "val", "--pred", str(pred),
                    "--json", str(out)], check=True, capture_output=True)
    data = json.loads(out.read_text())
    assert set(data) >= {"miou", "iou"} and list(data["iou"]) == list(CLASS_NAMES)
    assert all(v is None or 0 <= v <= 1 for v in data["iou"].values())
    assert data["miou"] == pytest.approx(score(synth_root, "val", pred)["miou"])


def test_missing_prediction(synth_root, tmp_path, capsys):
    pred = _write_predictions(synth_root, "val", tmp_path / "pred")
    victim = sorted(pred.glob("*.png"))[0]
    victim.unlink()
    assert main(["score", "--gt", str(synth_root), "--split", "val", "--pred", str(pred)]) == 2
    key = "_".join(victim.name.split("_")[:3])
    assert f"no prediction for {key}_gtFine_labelIds.png" in capsys.readouterr().err


def test_duplicate_prediction(synth_root, tmp_path):
    pred = _write_predictions(synth_root, "val", tmp_path / "pred")
    first = sorted(pred.glob("*.png"))[0]
    (pred / "copy").mkdir()
    (pred / "copy" / first.name).write_bytes(first.read_bytes())
    with pytest.raises(ScoreError, match="several predictions"):
        score(synth_root, "val", pred)


def test_wrong_size_and_train_ids(synth_root, tmp_path):
    pred = _write_predictions(synth_root, "val", tmp_path / "pred")
    first = sorted(pred.glob("*.png"))[0]
    Image.open(first).resize((64, 32)).save(first)
    with pytest.raises(ScoreError, match="size mismatch"):
        score(synth_root, "val", pred, workers=1)
    _write_predictions(synth_root, "val", pred)
    arr = np.asarray(Image.open(first)).copy()
    arr[:4, :4] = 255  # a trainId-style ignore value, not a label id
    Image.fromarray(arr).save(first)
    with pytest.raises(ScoreError, match=r"label ids \[255\] that Cityscapes does not evaluate"):
        score(synth_root, "val", pred, workers=1)


def test_missing_folders(synth_root, tmp_path):
    with pytest.raises(ScoreError, match="ground truth not found"):
        score(tmp_path, "val", tmp_path)
    with pytest.raises(ScoreError, match="prediction folder not found"):
        score(synth_root, "val", tmp_path / "nope")
