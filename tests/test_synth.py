from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from ifbf.commands.cli import main
from ifbf.data.labels import ID_TO_TRAIN, IGNORE, NAME_TO_ID, THING_IDS
from ifbf.data.synth import SynthSpec, render, write_dataset


def _digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.png"))}


def test_layout_matches_cityscapes(synth_root):
    for split, n in (("train", 8), ("val", 4), ("test", 2)):
        images = sorted((synth_root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
        assert len(images) == n
        for image in images:
            stem = image.name[: -len("_leftImg8bit.png")]
            city, seq, frame = stem.split("_")
            assert city == image.parent.name and len(seq) == 6 and len(frame) == 6
            gt = synth_root / "gtFine" / split / city
            assert (gt / f"{stem}_gtFine_labelIds.png").is_file() and (gt / f"{stem}_gtFine_instanceIds.png").is_file()
            with Image.open(image) as img:
                assert img.mode == "RGB" and img.size == (128, 64)


def test_every_image_holds_all_19_classes_and_void():
    spec = SynthSpec(height=128, width=256)
    for split, index in (("train", 0), ("train", 5), ("val", 3), ("test", 1)):
        _, label, _ = render(spec, split, index)
        train_ids = set(np.unique(ID_TO_TRAIN[label]).tolist())
        assert set(range(19)) <= train_ids, f"{split}/{index} misses {set(range(19)) - train_ids}"
        assert IGNORE in train_ids


def test_thin_structures_are_thin():
    _, label, _ = render(SynthSpec(height=128, width=256), "val", 0)
    pole = label == NAME_TO_ID["pole"]
    widths = pole.sum(1)[pole.any(1)]
    assert np.median(widths) <= 4  # poles are a few pixels wide, as at Cityscapes' eval scale


def test_instance_ids_follow_cityscapes_encoding():
    _, label, inst = render(SynthSpec(), "train", 2)
    assert inst.dtype == np.uint16
    things = np.isin(label, list(THING_IDS))
    assert (inst[things] // 1000 == label[things]).all()
    assert (inst[~things] == label[~things]).all()
    assert len(np.unique(inst[label == NAME_TO_ID["car"]])) == 2  # two cars, two instances


def test_deterministic_per_seed(tmp_path):
    a = write_dataset(tmp_path / "a", SynthSpec(train=2, val=1, test=1, height=48, width=96, seed=3))
    b = write_dataset(tmp_path / "b", SynthSpec(train=2, val=1, test=1, height=48, width=96, seed=3))
    c = write_dataset(tmp_path / "c", SynthSpec(train=2, val=1, test=1, height=48, width=96, seed=4))
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_cli(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--train", "1", "--val", "1", "--test", "0", "--height", "40", "--width", "80"]) == 0
    assert len(list(tmp_path.rglob("*_leftImg8bit.png"))) == 2
    assert main(["synth", "--out", str(tmp_path), "--height", "8"]) == 2
    assert "--height and --width must be >= 32" in capsys.readouterr().err
