"""``ifbf data verify``: every problem named at once, the manifest and its digest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_SAMPLE
from ifbf.commands.cli import main
from ifbf.config import load_config
from ifbf.data.synth import SynthSpec
from ifbf.data.verify import (
    CITYSCAPES,
    MANIFEST,
    Expected,
    expected_for,
    read_manifest,
    synthetic_expected,
    verify,
    write_manifest,
)

W, H = 32, 16


def _write(root, split, name, size=(W, H), labels=("labelIds", "labelTrainIds")):
    city = name.split("_")[0]
    img = root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png"
    img.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(img)
    for kind in labels:
        path = root / "gtFine" / split / city / f"{name}_gtFine_{kind}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((size[1], size[0]), 7, np.uint8)).save(path)


CITY = {"train": "aachen", "val": "frankfurt", "test": "berlin"}


def _dataset(root, counts=(("train", 3), ("val", 2), ("test", 1))):
    for split, n in counts:
        labels = ("labelIds",) if split == "test" else ("labelIds", "labelTrainIds")
        for i in range(n):
            _write(root, split, f"{CITY[split]}_{i:06d}_000019", labels=labels)
    return root


SMALL = Expected({"train": 3, "val": 2, "test": 1}, (W, H))


def test_cli_on_a_3_image_dataset_names_2975_and_every_problem(tmp_path, capsys):
    root = _dataset(tmp_path / "cs", (("train", 3),))
    assert main(["data", "verify", str(root), "--no-progress"]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert "train: 3 of 2975 images; 2972 missing (cities present: aachen)" in lines
    assert any(line.startswith("val: 0 of 500 images; 500 missing") for line in lines)
    assert any(line.startswith("test: 0 of 1525 images; 1525 missing") for line in lines)
    assert ("train: 3 images are not 2048x1024, e.g. aachen_000000_000019 (32x16), aachen_000001_000019 (32x16), "
            "aachen_000002_000019 (32x16)") in lines
    assert len(lines) == 7  # train: count, image, labelIds and labelTrainIds sizes; val, test: count; summary
    assert lines[-1].endswith("problems; not verified (fix them, or `ifbf data prepare` the official zips; a "
                              "deliberate subset passes with --allow-partial)")
    assert not (root / MANIFEST).exists()


def test_missing_label_and_image_are_named(tmp_path):
    root = _dataset(tmp_path / "cs")
    (root / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png").unlink()
    (root / "gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelTrainIds.png").unlink()  # optional
    (root / "leftImg8bit/train/aachen/aachen_000002_000019_leftImg8bit.png").unlink()
    problems = verify(root, SMALL).problems
    assert problems == [
        "train: 2 of 3 images; 1 missing, e.g. aachen_000002_000019 "
        "(their gtFine labels are there, the leftImg8bit files not)",
        "train: 1 of 2 images have no gtFine labelIds, e.g. aachen_000001_000019 "
        "(expected gtFine/train/<city>/<frame>_gtFine_labelIds.png)",
    ]


def test_wrong_size_and_broken_png_are_named(tmp_path):
    root = _dataset(tmp_path / "cs")
    _write(root, "val", "frankfurt_000002_000019", size=(W, H + 2))
    label = root / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    label.write_bytes(b"GIF89a not a png at all")
    rgb_label = root / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelTrainIds.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(rgb_label)
    problems = verify(root, Expected({"train": 3, "val": 3, "test": 1}, (W, H))).problems
    assert "val: 1 images are not 32x16, e.g. frankfurt_000002_000019 (32x18)" in problems
    assert "val: 1 labelIds files are not 32x16, e.g. frankfurt_000002_000019 (32x18)" in problems
    assert ("train: 1 labelIds files are unreadable, e.g. aachen_000000_000019 (not a PNG file (truncated or "
            "another format))") in problems
    assert ("train: 1 labelTrainIds files are not 8-bit single-channel PNGs, e.g. aachen_000001_000019 "
            "(bit depth 8, colour type 2)") in problems
    # size=None: any size, but a label must match its image
    assert verify(root, Expected({"train": 3, "val": 3, "test": 1}, None)).problems == [
        "train: 1 labelIds files are unreadable, e.g. aachen_000000_000019 "
        "(not a PNG file (truncated or another format))",
        "train: 1 labelTrainIds files are not 8-bit single-channel PNGs, e.g. aachen_000001_000019 "
        "(bit depth 8, colour type 2)",
    ]


def test_deep_decodes_what_the_header_check_cannot_see(tmp_path):
    root = _dataset(tmp_path / "cs")
    _write(root, "val", "frankfurt_000002_000019")
    path = root / "leftImg8bit/val/frankfurt/frankfurt_000002_000019_leftImg8bit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # header intact, pixel data cut
    expected = Expected({"train": 3, "val": 3, "test": 1}, (W, H))
    assert verify(root, expected).ok
    problems = verify(root, expected, deep=True, workers=2, progress=False).problems
    assert len(problems) == 1 and problems[0].startswith(
        "val: 1 files do not decode, e.g. leftImg8bit/val/frankfurt/frankfurt_000002_000019_leftImg8bit.png (")


def test_success_writes_manifest_and_digest_follows_file_sizes(tmp_path, capsys):
    root = _dataset(tmp_path / "cs")
    assert main(["data", "verify", str(root), "--expect", "train=3", "val=2", "test=1", "--size", "32x16"]) == 0
    assert "verified Cityscapes (train 3, val 2, test 1 images)" in capsys.readouterr().out
    manifest = read_manifest(root)
    assert json.loads((root / MANIFEST).read_text()) == manifest
    assert manifest["counts"] == {"train": 3, "val": 2, "test": 1} and manifest["partial"] is False
    sizes = manifest["splits"]["train"]["aachen_000000_000019"]
    image = root / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
    assert sizes["image"] == image.stat().st_size and set(sizes) == {"image", "labelIds", "labelTrainIds"}
    digest = manifest["digest"]

    def digest_now() -> str:  # what the next verify would record
        return verify(root, SMALL).digest

    assert digest_now() == digest
    image.write_bytes(image.read_bytes() + b"\0")  # same names, one byte more
    assert digest_now() != digest
    image.write_bytes(image.read_bytes()[:-1])
    assert digest_now() == digest
    image.rename(image.with_name("aachen_000009_000019_leftImg8bit.png"))  # same sizes, another name
    assert digest_now() != digest
    moved = root.rename(tmp_path / "moved")
    assert read_manifest(moved)["digest"] == digest  # the root's own manifest travels with it


def test_manifest_goes_next_to_a_root_it_cannot_write(tmp_path):
    root = _dataset(tmp_path / "cs")
    (root / MANIFEST).mkdir()  # the root's manifest path cannot be written
    result = verify(root, SMALL)
    path = write_manifest(result)
    assert path == tmp_path / f"cs.{MANIFEST}"
    assert read_manifest(root)["digest"] == result.digest


def test_allow_partial_passes_a_subset_and_records_it(tmp_path):
    root = _dataset(tmp_path / "cs", (("train", 2), ("val", 1)))
    assert not verify(root, SMALL).ok
    result = verify(root, SMALL, allow_partial=True)
    assert result.ok and result.partial
    write_manifest(result)
    assert read_manifest(root)["partial"] is True and read_manifest(root)["counts"]["test"] == 0
    (root / "gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png").unlink()
    assert verify(root, SMALL, allow_partial=True).problems == [
        "val: 1 of 1 images have no gtFine labelIds, e.g. frankfurt_000000_000019 "
        "(expected gtFine/val/<city>/<frame>_gtFine_labelIds.png)"]
    empty = tmp_path / "empty"
    (empty / "leftImg8bit").mkdir(parents=True)
    assert verify(empty, SMALL, allow_partial=True).problems == [f"no images at all under {empty / 'leftImg8bit'}"]


def test_the_synthetic_dataset_is_verified_against_its_own_counts(synth_root, capsys):
    spec = SynthSpec(train=8, val=4, test=2, height=64, width=128)
    assert verify(synth_root, synthetic_expected(spec)).ok
    assert not verify(synth_root, CITYSCAPES).ok
    assert main(["data", "verify", str(synth_root)]) == 0  # SYNTHETIC.json holds its expected counts
    assert "verified synthetic (train 8, val 4, test 2 images)" in capsys.readouterr().out
    smoke = load_config(None, ["data.dataset=synthetic"]).data
    assert expected_for(smoke) == synthetic_expected(smoke.synth) and expected_for(load_config().data) == CITYSCAPES


@pytest.mark.skipif(not SHARED_SAMPLE.is_dir(), reason="the real Cityscapes sample in ../shared is absent")
def test_real_frame(capsys):
    """The real (downscaled) val frame: complete for its own counts, and named against the official ones.
    Read only: no manifest is written into ../shared."""
    assert verify(SHARED_SAMPLE, Expected({"val": 1}, (256, 128))).ok
    problems = verify(SHARED_SAMPLE, CITYSCAPES).problems
    assert "val: 1 of 500 images; 499 missing (cities present: frankfurt)" in problems
    assert "val: 1 images are not 2048x1024, e.g. frankfurt_000000_000294 (256x128)" in problems
    assert "val: 1 labelTrainIds files are not 2048x1024, e.g. frankfurt_000000_000294 (256x128)" in problems
    assert verify(SHARED_SAMPLE, Expected({"val": 1}, (256, 128)), deep=True, workers=1, progress=False).ok


def test_verify_config_checks_the_dataset_a_config_trains_on(tmp_path, monkeypatch):
    from ifbf.data.verify import NO_ROOT, verify_config

    smoke = load_config(None, ["data.dataset=synthetic", "data.synth.train=2", "data.synth.val=1", "data.synth.test=0",
                               "data.synth.height=32", "data.synth.width=64"])
    result = verify_config(smoke.data)
    assert result.ok and result.counts() == {"train": 2, "val": 1, "test": 0}  # generated, then verified
    assert read_manifest(result.root)["dataset"] == "synthetic"
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    assert verify_config(load_config().data).problems == [NO_ROOT]
    root = _dataset(tmp_path / "cs", (("train", 3),))
    monkeypatch.setenv("CITYSCAPES_DATASET", str(root))
    problems = verify_config(load_config().data).problems
    assert "train: 3 of 2975 images; 2972 missing (cities present: aachen)" in problems
    assert verify_config(load_config(None, [f"data.root={tmp_path / 'nowhere'}"]).data).problems == [
        f"dataset root {tmp_path / 'nowhere'} does not exist (download: https://www.cityscapes-dataset.com/downloads/, "
        f"then `ifbf data prepare --zips DIR --out {tmp_path / 'nowhere'}`)"]
