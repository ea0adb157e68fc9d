"""``ifbf synth``: a procedural street-scene dataset in the exact Cityscapes layout.

Every image holds all 19 evaluated classes (and some void), drawn as a street seen from a car: sky,
buildings with windows, walls and fences at the kerb, trees, terrain, road with lane marks, sidewalks,
thin poles carrying traffic lights and signs, and road users (cars, trucks, buses, a train, people,
riders on bicycles and motorcycles). Classes have their own colour and texture, with per-image jitter and
noise, so a small model learns them in a few CPU minutes, while thin structures and object boundaries
reward the skip connection and the spatial stream. Output is a pure function of (seed, split, index).

Files: leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png (RGB) and, beside them in
gtFine, *_gtFine_labelIds.png (uint8 label ids) and *_gtFine_instanceIds.png (uint16: id * 1000 + k for
classes with instances, the label id otherwise), as in Cityscapes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ifbf.config import SynthConfig
from ifbf.data.labels import NAME_TO_ID, THING_IDS

CITIES = {"train": ("synthtown", "synthville"), "val": ("synthcity",), "test": ("synthburg",)}
SPLIT_SALT = {"train": 0, "val": 1, "test": 2}

# Base colour (RGB) and texture amplitude of each class; drawn with jitter so colour alone is not exact.
STYLE: dict[str, tuple[tuple[int, int, int], int]] = {
    "unlabeled": ((20, 20, 20), 6),
    "ego vehicle": ((35, 30, 40), 4),
    "static": ((110, 90, 60), 10),
    "road": ((90, 90, 95), 8),
    "sidewalk": ((170, 150, 160), 10),
    "building": ((120, 80, 60), 12),
    "wall": ((160, 160, 120), 8),
    "fence": ((150, 130, 90), 10),
    "pole": ((210, 210, 60), 6),
    "traffic light": ((250, 150, 30), 10),
    "traffic sign": ((230, 230, 0), 6),
    "vegetation": ((50, 130, 40), 25),
    "terrain": ((140, 180, 100), 15),
    "sky": ((110, 160, 230), 6),
    "person": ((220, 30, 70), 12),
    "rider": ((255, 0, 0), 10),
    "car": ((20, 30, 150), 10),
    "truck": ((20, 80, 100), 10),
    "bus": ((30, 100, 120), 10),
    "train": ((0, 120, 110), 10),
    "motorcycle": ((40, 40, 240), 10),
    "bicycle": ((130, 20, 40), 10),
}


SynthSpec = SynthConfig  # the dataset's size and seed: data.synth in a config


def fingerprint(spec: SynthSpec) -> str:
    return hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:12]


class _Canvas:
    """Label and instance maps drawn with PIL, painted back to front."""

    def __init__(self, height: int, width: int) -> None:
        self.label = Image.new("L", (width, height), NAME_TO_ID["unlabeled"])
        self.inst = Image.new("I", (width, height), NAME_TO_ID["unlabeled"])
        self.draw_l, self.draw_i = ImageDraw.Draw(self.label), ImageDraw.Draw(self.inst)
        self.count: dict[int, int] = {}

    def _ids(self, name: str) -> tuple[int, int]:
        label = NAME_TO_ID[name]
        if label not in THING_IDS:
            return label, label
        k = self.count.get(label, 0)
        self.count[label] = k + 1
        return label, label * 1000 + k

    def rect(self, name: str, box: tuple[float, float, float, float]) -> None:
        label, inst = self._ids(name)
        self.draw_l.rectangle(box, fill=label)
        self.draw_i.rectangle(box, fill=inst)

    def ellipse(self, name: str, box: tuple[float, float, float, float]) -> None:
        label, inst = self._ids(name)
        self.draw_l.ellipse(box, fill=label)
        self.draw_i.ellipse(box, fill=inst)

    def polygon(self, name: str, points: list[tuple[float, float]]) -> None:
        label, inst = self._ids(name)
        self.draw_l.polygon(points, fill=label)
        self.draw_i.polygon(points, fill=inst)

    def parts(self, name: str, shapes: list[tuple[str, tuple[float, ...]]]) -> None:
        """One instance made of several shapes (a bicycle's wheels and frame)."""
        label, inst = self._ids(name)
        for kind, box in shapes:
            getattr(self.draw_l, kind)(box, fill=label)
            getattr(self.draw_i, kind)(box, fill=inst)


def _scene(rng: np.random.Generator, h: int, w: int) -> _Canvas:
    """One street scene: the street and what stands along it, then what moves on it (in this order: the
    random draws, hence the dataset, depend on it)."""
    c = _Canvas(h, w)
    horizon, left, right = _street(rng, c, h, w)
    _road_users(rng, c, h, w, horizon, left, right)
    return c


def _street(rng: np.random.Generator, c: _Canvas, h: int, w: int) -> tuple[int, float, float]:
    """Sky, buildings, trees, road, sidewalks, terrain, wall, fence, a train, poles with lights and signs;
    returns the horizon row and the road's left and right edges there."""
    horizon = int(h * rng.uniform(0.42, 0.52))
    c.rect("sky", (0, 0, w, horizon))
    # buildings: blocks of varying height along the street
    x = 0
    while x < w:
        bw = int(rng.uniform(0.12, 0.3) * w)
        top = int(rng.uniform(0.05, 0.3) * h)
        c.rect("building", (x, top, x + bw, horizon))
        x += bw + int(rng.uniform(0, 0.04) * w)
    # trees in front of the buildings
    for _ in range(2):
        cx, cy, r = rng.uniform(0.1, 0.9) * w, horizon - rng.uniform(0.1, 0.2) * h, rng.uniform(0.05, 0.09) * w
        c.ellipse("vegetation", (cx - r, cy - r, cx + r, cy + r))
        c.rect("vegetation", (cx - 1, cy, cx + 1, horizon))
    # ground: road between two sidewalks, a terrain strip, kerb-side wall and fence
    c.rect("ground" if "ground" in NAME_TO_ID else "static", (0, horizon, w, h))
    left, right = rng.uniform(0.3, 0.42) * w, rng.uniform(0.58, 0.7) * w
    c.polygon("road", [(left, horizon), (right, horizon), (w * 1.1, h), (-w * 0.1, h)])
    c.polygon("sidewalk", [(0, horizon), (left, horizon), (-w * 0.1, h), (0, h)])
    c.polygon("sidewalk", [(right, horizon), (w, horizon), (w, h), (w * 1.1, h)])
    c.polygon("terrain", [(0, horizon), (left * 0.5, horizon), (0, horizon + 0.2 * h)])
    wall_x = rng.uniform(0.0, 0.15) * w
    c.rect("wall", (wall_x, horizon - 0.08 * h, wall_x + 0.18 * w, horizon + 1))
    fence_x = rng.uniform(0.72, 0.82) * w
    c.rect("fence", (fence_x, horizon - 0.07 * h, fence_x + 0.16 * w, horizon + 1))
    # lane marks are road too (texture only), the ego vehicle is void
    # a train on an elevated track across the horizon
    tx = rng.uniform(0.0, 0.5) * w
    c.rect("train", (tx, horizon - 0.16 * h, tx + 0.35 * w, horizon - 0.06 * h))
    # poles with a traffic light and a sign: thin structures (1-2 px at 128 x 256)
    for name, px in (("traffic light", rng.uniform(0.08, 0.3)), ("traffic sign", rng.uniform(0.7, 0.92))):
        px *= w
        top = horizon - rng.uniform(0.25, 0.35) * h
        pw = max(1.0, w / 200)
        c.rect("pole", (px, top, px + pw, horizon + 0.12 * h))
        box = (px - 0.015 * w, top, px + 0.02 * w, top + 0.08 * h)
        (c.rect if name == "traffic light" else c.ellipse)(name, box)
    return horizon, left, right


def _road_users(rng: np.random.Generator, c: _Canvas, h: int, w: int, horizon: int, left: float, right: float) -> None:
    """Vehicles, two-wheelers with riders, pedestrians, and the void parts (a static object, the ego bonnet)."""
    # vehicles on the road, farther ones smaller
    for name, width, height_ in (("bus", 0.26, 0.2), ("truck", 0.2, 0.18), ("car", 0.14, 0.09), ("car", 0.12, 0.08)):
        depth = rng.uniform(0.15, 0.6)
        y1 = horizon + depth * (h - horizon)
        scale = 0.5 + depth
        vw, vh = width * w * scale, height_ * h * scale
        vx = rng.uniform(left * 0.6, right * 1.1 - vw / w * w * 0.3)
        c.rect(name, (vx, y1 - vh, vx + vw, y1))
    # two-wheelers with riders, pedestrians on the sidewalks
    for name in ("bicycle", "motorcycle"):
        depth = rng.uniform(0.4, 0.8)
        y1 = horizon + depth * (h - horizon)
        bx, r = rng.uniform(0.3, 0.65) * w, 0.025 * w * (0.5 + depth)
        c.parts(name, [("ellipse", (bx - r, y1 - 2 * r, bx + r, y1)), ("ellipse", (bx + 2 * r, y1 - 2 * r, bx + 4 * r, y1)),
                       ("rectangle", (bx, y1 - 2.2 * r, bx + 3 * r, y1 - 1.6 * r))])
        c.ellipse("rider", (bx + 0.6 * r, y1 - 6 * r, bx + 2.2 * r, y1 - 1.8 * r))
    for side in (rng.uniform(0.02, 0.25), rng.uniform(0.75, 0.95)):
        depth = rng.uniform(0.3, 0.9)
        y1 = horizon + depth * (h - horizon)
        px, ph = side * w, 0.22 * h * (0.4 + depth)
        c.ellipse("person", (px, y1 - ph, px + ph * 0.3, y1))
    # void: a static object and the ego vehicle's bonnet
    sx = rng.uniform(0.0, 0.9) * w
    c.rect("static", (sx, horizon - 0.03 * h, sx + 0.05 * w, horizon + 0.02 * h))
    c.polygon("ego vehicle", [(0.15 * w, h), (0.3 * w, h - 0.07 * h), (0.7 * w, h - 0.07 * h), (0.85 * w, h)])


def _paint(rng: np.random.Generator, label: np.ndarray) -> np.ndarray:
    """RGB image from a label map: per-class colour with jitter, texture and noise."""
    h, w = label.shape
    lut = np.zeros((256, 3), np.float32)
    amp = np.zeros(256, np.float32)
    for name, (rgb, texture) in STYLE.items():
        if name in NAME_TO_ID:
            lut[NAME_TO_ID[name]] = np.clip(np.array(rgb) + rng.normal(0, 10, 3), 0, 255)
            amp[NAME_TO_ID[name]] = texture
    img = lut[label]
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = np.sin(xx * 0.9) * np.sin(yy * 0.7)  # window grid on buildings, slats on fences
    structured = np.isin(label, [NAME_TO_ID["building"], NAME_TO_ID["fence"]])
    img += (stripes * 18 * structured)[..., None]
    img += rng.normal(0, 1, (h, w, 1)) * amp[label][..., None]
    lane = (label == NAME_TO_ID["road"]) & (np.abs(xx - w / 2) < max(1, w // 128)) & ((yy // 4) % 2 == 0)
    img[lane] = 235
    img *= rng.uniform(0.8, 1.15)  # global illumination
    return np.clip(img, 0, 255).astype(np.uint8)


def sample_name(split: str, index: int) -> tuple[str, str]:
    cities = CITIES[split]
    city = cities[index % len(cities)]
    return city, f"{city}_{index // len(cities):06d}_{19:06d}"


def render(spec: SynthSpec, split: str, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB image, label ids, instance ids) of one sample: a pure function of its arguments."""
    rng = np.random.default_rng([spec.seed, SPLIT_SALT[split], index])
    canvas = _scene(rng, spec.height, spec.width)
    label = np.asarray(canvas.label, dtype=np.uint8)
    inst = np.asarray(canvas.inst, dtype=np.int32).astype(np.uint16)
    return _paint(rng, label), label, inst


def write_dataset(out: str | Path, spec: SynthSpec) -> Path:
    """Write the dataset to ``out`` (atomically per file); returns ``out``."""
    out = Path(out)
    for split in ("train", "val", "test"):
        for index in range(getattr(spec, split)):
            city, stem = sample_name(split, index)
            image, label, inst = render(spec, split, index)
            paths = [
                (out / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image),
                (out / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label),
                (out / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png", inst),
            ]
            for path, array in paths:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # unique: ranks may generate at once
                Image.fromarray(array).save(tmp, format="PNG")
                os.replace(tmp, path)
    marker = out / f".SYNTHETIC.json.{os.getpid()}"
    marker.write_text(json.dumps(asdict(spec), indent=1) + "\n")
    os.replace(marker, out / "SYNTHETIC.json")
    return out


def cache_root() -> Path:
    return Path(os.environ.get("IFBF_CACHE", Path.home() / ".cache" / "ifbf"))


def ensure_dataset(spec: SynthSpec, root: str | Path | None = None) -> Path:
    """The dataset for ``spec`` under ``root`` (default: the cache), written once and then reused."""
    out = Path(root) if root else cache_root() / f"synthetic-{fingerprint(spec)}"
    marker = out / "SYNTHETIC.json"
    if marker.is_file() and json.loads(marker.read_text()) == asdict(spec):
        return out
    return write_dataset(out, spec)
