"""``ifbf data prepare`` on tiny zips in the official layout; labelTrainIds checked against cityscapesscripts."""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_SAMPLE
from cityscapes_zips import FRAMES, HEIGHT, WIDTH, write_zips
from ifbf.commands.cli import main
from ifbf.data.labels import ID_TO_TRAIN
from ifbf.data.prepare import PrepareError, prepare
from ifbf.data.verify import Expected, read_manifest

TINY = Expected({s: len(n) for s, n in FRAMES.items()}, (WIDTH, HEIGHT))


@pytest.fixture(scope="module")
def zips(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("zips")
    return write_zips(tmp / "zips", tmp / "work")


def _reference_train_ids(gt_root, tmp_path, monkeypatch):
    """cityscapesscripts' own createTrainIdLabelImgs, run on a copy of the polygons."""
    from cityscapesscripts.preparation import createTrainIdLabelImgs

    ref = tmp_path / "reference"
    shutil.copytree(gt_root / "gtFine", ref / "gtFine", ignore=shutil.ignore_patterns("*.png"))
    monkeypatch.setenv("CITYSCAPES_DATASET", str(ref))
    createTrainIdLabelImgs.main()
    return ref


def test_prepare_extracts_and_creates_train_ids_like_cityscapesscripts(zips, tmp_path, monkeypatch):
    out = tmp_path / "cityscapes"
    result = prepare(out, zips, TINY, workers=2, progress=False)
    assert result.ok, result.problems
    assert result.counts() == {"train": 3, "val": 1, "test": 1}
    ref = _reference_train_ids(out, tmp_path, monkeypatch)
    created = sorted(out.glob("gtFine/*/*/*_gtFine_labelTrainIds.png"))
    assert len(created) == 5
    for path in created:
        ours = np.asarray(Image.open(path))
        theirs = np.asarray(Image.open(ref / path.relative_to(out)))
        assert ours.dtype == np.uint8 and np.array_equal(ours, theirs), path.name
        # and the shipped labelIds map to the same trainIds through cityscapesscripts' label table
        ids = np.asarray(Image.open(str(path).replace("labelTrainIds", "labelIds")))
        assert np.array_equal(ID_TO_TRAIN[ids], ours)
        assert {0, 10, 13, 255} <= set(np.unique(ours).tolist())  # road, sky, car (from 'cargroup'), void
    assert not (out / "README").exists()  # only leftImg8bit/ and gtFine/ are extracted
    assert read_manifest(out)["digest"] == result.digest


def test_prepare_resumes_and_skips_what_is_done(zips, tmp_path):
    out = tmp_path / "cityscapes"
    prepare(out, zips, TINY, workers=1, progress=False)
    kept = out / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png"
    os.utime(kept, (1, 1))
    dropped = out / "gtFine/train/bochum/bochum_000000_000313_gtFine_labelTrainIds.png"
    dropped.unlink()
    cut = out / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
    cut.write_bytes(cut.read_bytes()[:100])  # an extraction interrupted mid-file
    good = out / "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png"
    os.utime(good, (1, 1))
    result = prepare(out, zips, TINY, workers=1, progress=False)
    assert result.ok, result.problems
    assert kept.stat().st_mtime == 1 and good.stat().st_mtime == 1  # done work is not redone
    assert dropped.is_file()
    with zipfile.ZipFile(zips / "leftImg8bit_trainvaltest.zip") as z:
        assert cut.read_bytes() == z.read("leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png")
    assert not list(out.rglob("*.tmp*"))


def test_prepare_without_zips_converts_an_extracted_root(zips, tmp_path):
    out = tmp_path / "cityscapes"
    prepare(out, zips, TINY, progress=False)
    for path in out.glob("gtFine/*/*/*_labelTrainIds.png"):
        path.unlink()
    assert prepare(out, None, TINY, progress=False).ok
    assert len(list(out.glob("gtFine/*/*/*_labelTrainIds.png"))) == 5


def test_missing_zip_names_both_files_and_the_download_page(tmp_path, capsys):
    (tmp_path / "zips").mkdir()
    (tmp_path / "zips" / "leftImg8bit_trainvaltest(1).zip").write_bytes(b"")
    assert main(["data", "prepare", "--zips", str(tmp_path / "zips"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip not in" in err
    assert "https://www.cityscapes-dataset.com/downloads/" in err and "found leftImg8bit_trainvaltest(1).zip" in err
    assert not (tmp_path / "out").exists()  # nothing written before both zips are found


def test_wrong_or_damaged_zip_is_refused(zips, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(zips / "gtFine_trainvaltest.zip", bad)
    with zipfile.ZipFile(bad / "leftImg8bit_trainvaltest.zip", "w") as z:  # e.g. the sequence package
        z.writestr("leftImg8bit_sequence/train/aachen/aachen_000000_000000_leftImg8bit.png", b"x")
    with pytest.raises(PrepareError, match="has no leftImg8bit/ folder inside: not the official"):
        prepare(tmp_path / "out", bad, TINY, progress=False)
    (bad / "leftImg8bit_trainvaltest.zip").write_bytes(b"PK\x03\x04 truncated download")
    with pytest.raises(PrepareError, match="not a readable zip"):
        prepare(tmp_path / "out", bad, TINY, progress=False)


def test_cli_prepare_verifies_against_the_official_counts(zips, tmp_path, capsys):
    assert main(["data", "prepare", "--zips", str(zips), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    out = capsys.readouterr().out
    assert "train: 3 of 2975 images; 2972 missing" in out and "are not 2048x1024" in out
    assert len(list((tmp_path / "out").glob("gtFine/*/*/*_labelTrainIds.png"))) == 5
    # the summary's fix is not to run prepare again, the command just run
    assert out.splitlines()[-1].endswith("not verified (fix them, are the zips the complete official ones?; a "
                                         "deliberate subset passes with --allow-partial)")


def test_not_enough_disk_space_is_said_before_extracting(zips, tmp_path, monkeypatch):
    import shutil as sh
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda path: usage(10**12, 10**12 - 100, 100))
    with pytest.raises(PrepareError, match=r"extracting leftImg8bit_trainvaltest.zip needs 0.0 GB, .* has 0.0 GB free"):
        prepare(tmp_path / "out", zips, TINY, progress=False)
    assert not list((tmp_path / "out").rglob("*.png"))


def test_a_root_with_label_ids_only_verifies_and_trains(zips, tmp_path, capsys):
    """Converted by another tool, polygons deleted to save space: no polygons, no labelTrainIds. Training and
    evaluation read labelIds, so verify accepts the root (it used to demand labelTrainIds, which prepare can
    create only from polygons), and a training on it runs; with the real frame of ../shared when present."""
    root = tmp_path / "cityscapes"
    with zipfile.ZipFile(zips / "gtFine_trainvaltest.zip") as gt, \
            zipfile.ZipFile(zips / "leftImg8bit_trainvaltest.zip") as left:
        gt.extractall(root, [m for m in gt.namelist() if m.endswith("_labelIds.png")])
        left.extractall(root, [m for m in left.namelist() if m.startswith("leftImg8bit/")])
    if SHARED_SAMPLE.is_dir():  # a real frame (256x128): its labelIds only
        for path in [*SHARED_SAMPLE.glob("leftImg8bit/val/*/*.png"), *SHARED_SAMPLE.glob("gtFine/val/*/*_labelIds.png")]:
            target = root / path.relative_to(SHARED_SAMPLE)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    assert not list(root.glob("gtFine/*/*/*_polygons.json")) and not list(root.glob("gtFine/*/*/*_labelTrainIds.png"))
    assert main(["data", "verify", str(root), "--size", "any", "--allow-partial", "--no-progress"]) == 0
    assert "verified Cityscapes (train 3, val" in capsys.readouterr().out
    # prepare (official sizes: refused) never asks for labelTrainIds, which it could not create without polygons
    assert main(["data", "prepare", "--out", str(root), "--allow-partial", "--no-progress"]) == 2
    out = capsys.readouterr().out
    assert "are not 2048x1024" in out and "labelTrainIds" not in out
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--no-progress", "data.dataset=cityscapes", f"data.root={root}",
                 "model.backbone=resnet18", "model.norm=bn", "data.crop_size=[32, 32]", "data.batch_size=2",
                 "train.iters=2", "train.warmup_iters=1", "train.ohem_min_kept=100", "eval.scales=[1.0]",
                 "runtime.workers=0"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["iters"] == 2 and len(metrics["evaluations"]) == 1
