"""Tiny stand-ins for the official Cityscapes zips: same member names and layout, 64x32 images.

The labelIds and color PNGs inside are made from the polygons by cityscapesscripts' json2labelImg, which
is how the official ones were made; the polygons use the cases its converter handles specially (a
deleted object, a '...group' label, a label with a negative id)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from PIL import Image

WIDTH, HEIGHT = 64, 32
FRAMES = {  # split -> frame names, as in the official packages
    "train": ["aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000313"],
    "val": ["frankfurt_000000_000294"],
    "test": ["berlin_000000_000019"],
}


def polygons(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    x = int(rng.integers(10, 40))
    objects = [
        {"label": "sky", "polygon": [[0, 0], [63, 0], [63, 10], [0, 10]]},
        {"label": "road", "polygon": [[0, 20], [63, 20], [63, 31], [0, 31]]},
        {"label": "building", "polygon": [[0, 8], [30, 5], [30, 20], [0, 20]]},
        {"label": "cargroup", "polygon": [[x, 16], [x + 12, 15], [x + 14, 26], [x, 27]]},
        {"label": "person", "polygon": [[x + 15, 10], [x + 18, 10], [x + 19, 25], [x + 14, 25]], "deleted": 1},
        {"label": "rider", "polygon": [[50, 12], [56, 12], [55, 24], [51, 24]]},
        {"label": "license plate", "polygon": [[x + 2, 22], [x + 8, 22], [x + 8, 24], [x + 2, 24]]},
        {"label": "ego vehicle", "polygon": [[10, 31], [20, 28], [44, 28], [54, 31]]},
    ]
    return {"imgHeight": HEIGHT, "imgWidth": WIDTH, "objects": objects}


def write_zips(zip_dir: Path, work: Path, frames: dict[str, list[str]] = FRAMES) -> Path:
    """Write leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip into ``zip_dir``; returns it."""
    zip_dir.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_dir / "leftImg8bit_trainvaltest.zip", "w") as left, \
            zipfile.ZipFile(zip_dir / "gtFine_trainvaltest.zip", "w") as gt:
        for z in (left, gt):
            z.writestr("README", "The Cityscapes Dataset\n")
            z.writestr("license.txt", "terms of use\n")
        for seed, (split, name) in enumerate((s, n) for s, names in frames.items() for n in names):
            city = name.split("_")[0]
            image = np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            Image.fromarray(image).save(work / "image.png")
            left.write(work / "image.png", f"leftImg8bit/{split}/{city}/{name}_leftImg8bit.png")
            stem = f"gtFine/{split}/{city}/{name}_gtFine"
            (work / "polygons.json").write_text(json.dumps(polygons(seed)))
            gt.write(work / "polygons.json", f"{stem}_polygons.json")
            for encoding, suffix in (("ids", "labelIds"), ("color", "color")):
                json2labelImg(str(work / "polygons.json"), str(work / f"{suffix}.png"), encoding)
                gt.write(work / f"{suffix}.png", f"{stem}_{suffix}.png")
            Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint16)).save(work / "inst.png")
            gt.write(work / "inst.png", f"{stem}_instanceIds.png")
    return zip_dir
