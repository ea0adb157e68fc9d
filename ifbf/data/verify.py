"""``ifbf data verify``: is a Cityscapes root complete and readable, before any GPU-hour is spent?

Per split: the image count against the expected one (official: 2975 / 500 / 1525), every image with the
gtFine label that training and evaluation read (``*_gtFine_labelIds.png``, mapped to train ids in memory;
``*_labelTrainIds.png`` are optional: checked when present, never demanded, since a root converted by
another tool or without its polygons may lack them), image sizes (official: 2048x1024) and readable PNG headers (26 bytes per file, so the fast check takes seconds);
``deep`` decodes every file. Every problem is collected and reported at once, one line each, aggregated
("train: 3 of 2975 images; 2972 missing, e.g. ..."). On success a small manifest is written: per split the
frame names and byte sizes, and a sha256 digest of the dataset (file names + sizes) that runs record.

Expected counts and sizes are a parameter (``Expected``): the embedded synthetic dataset is verified
against its own (``expected_for``), so it is never refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ifbf.config import DataConfig, SynthConfig
from ifbf.data.synth import cache_root, ensure_dataset
from ifbf.errors import IfbfError

DOWNLOAD_URL = "https://www.cityscapes-dataset.com/downloads/"
SPLITS = ("train", "val", "test")
# kind -> (top folder, file-name suffix); a frame is <city>_<seq>_<frame>
KINDS = {
    "image": ("leftImg8bit", "_leftImg8bit.png"),
    "labelIds": ("gtFine", "_gtFine_labelIds.png"),
    "labelTrainIds": ("gtFine", "_gtFine_labelTrainIds.png"),
}
MANIFEST = "ifbf_dataset.json"
NO_ROOT = ("no Cityscapes root: set CITYSCAPES_DATASET=/path/to/cityscapes (the folder holding leftImg8bit/ and "
           "gtFine/) or data.root=..., or use the embedded synthetic data (data.dataset=synthetic)")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXAMPLES = 3  # names shown per problem line


@dataclass(frozen=True)
class Expected:
    """What a complete dataset holds: images per split and image size (width, height; None = any, but labels
    must match their image)."""

    counts: dict[str, int]
    size: tuple[int, int] | None = (2048, 1024)
    name: str = "Cityscapes"


CITYSCAPES = Expected(counts={"train": 2975, "val": 500, "test": 1525})


def synthetic_expected(spec: SynthConfig) -> Expected:
    """The embedded synthetic dataset (``ifbf synth``): its own counts and size."""
    counts = {"train": spec.train, "val": spec.val, "test": spec.test}
    return Expected(counts, (spec.width, spec.height), "synthetic")


def expected_for(cfg: DataConfig) -> Expected:
    return synthetic_expected(cfg.synth) if cfg.dataset == "synthetic" else CITYSCAPES


@dataclass
class Frame:
    city: str
    sizes: dict[str, int] = field(default_factory=dict)  # kind -> bytes

    def path(self, root: Path, split: str, name: str, kind: str) -> Path:
        top, suffix = KINDS[kind]
        return root / top / split / self.city / f"{name}{suffix}"


def scan_split(root: Path, split: str) -> dict[str, Frame]:
    """Every frame of ``split`` that has an image or a label file, with the byte size of each file."""
    frames: dict[str, Frame] = {}
    for kind, (top, suffix) in KINDS.items():
        split_dir = root / top / split
        if not split_dir.is_dir():
            continue
        for city in sorted(os.scandir(split_dir), key=lambda e: e.name):
            if not city.is_dir():
                continue
            for entry in os.scandir(city.path):
                if entry.name.endswith(suffix) and entry.is_file():
                    name = entry.name[: -len(suffix)]
                    frames.setdefault(name, Frame(city.name)).sizes[kind] = entry.stat().st_size
    return dict(sorted(frames.items()))


def present_splits(root: Path) -> list[str]:
    tops = [root / top for top in ("leftImg8bit", "gtFine") if (root / top).is_dir()]
    return sorted({p.name for top in tops for p in top.iterdir() if p.is_dir()})


def digest_of(splits: dict[str, dict[str, Frame]]) -> str:
    """sha256 of every file's relative path and byte size (names + sizes: fast, and any change shows)."""
    h = hashlib.sha256()
    for split in sorted(splits):
        for name, frame in splits[split].items():
            for kind in sorted(frame.sizes):
                top, suffix = KINDS[kind]
                h.update(f"{top}/{split}/{frame.city}/{name}{suffix}\t{frame.sizes[kind]}\n".encode())
    return h.hexdigest()


def png_header(path: Path) -> tuple[int, int, int, int] | str:
    """(width, height, bit depth, colour type) from the IHDR chunk, or what is wrong with the file."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError as err:
        return f"unreadable: {err.strerror}"
    if len(head) < 26 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return "not a PNG file (truncated or another format)"
    width, height = struct.unpack(">II", head[16:24])
    return width, height, head[24], head[25]


def decode_error(path: Path) -> str | None:
    """None when the whole file decodes, else the decoder's message."""
    try:
        with Image.open(path) as img:
            img.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        return str(err) or type(err).__name__
    return None


def _line(split: str, what: str, names: list[str], detail: dict[str, str] | None = None, hint: str = "") -> str:
    examples = ", ".join(f"{n} ({detail[n]})" if detail else n for n in names[:EXAMPLES])
    return f"{split}: {what}, e.g. {examples}{hint}"


@dataclass
class VerifyResult:
    root: Path
    expected: Expected
    splits: dict[str, dict[str, Frame]]
    problems: list[str]
    allow_partial: bool = False
    deep: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        return {s: sum("image" in f.sizes for f in frames.values()) for s, frames in self.splits.items()}

    @property
    def partial(self) -> bool:
        """A deliberate subset: fewer images than expected in some split, accepted with allow_partial."""
        counts = self.counts()
        return any(counts.get(s, 0) < n for s, n in self.expected.counts.items())

    @property
    def digest(self) -> str:
        return digest_of(self.splits)


def _check_counts(root: Path, split: str, frames: dict[str, Frame], expected: int, allow_partial: bool) -> list[str]:
    images = [n for n, f in frames.items() if "image" in f.sizes]
    if len(images) > expected:
        return [f"{split}: {len(images)} images, expected {expected} ({len(images) - expected} extra: is another "
                f"split mixed in?)"]
    if len(images) == expected or (allow_partial and images):
        return []
    if allow_partial and expected and not images:
        return []  # a deliberate subset may leave a split out; an empty dataset is caught by verify()
    missing = expected - len(images)
    what = f"{len(images)} of {expected} images; {missing} missing"
    head = f"{split}: {what}"
    labelled = [n for n, f in frames.items() if "image" not in f.sizes]  # labels whose image is missing
    if labelled:
        return [_line(split, what, labelled, hint=" (their gtFine labels are there, the leftImg8bit files not)")]
    if not (root / "leftImg8bit" / split).is_dir():
        return [f"{head} ({root / 'leftImg8bit' / split} does not exist)"]
    cities = sorted({f.city for f in frames.values()})
    return [f"{head} (cities present: {', '.join(cities[:5]) + (', ...' if len(cities) > 5 else '') or 'none'})"]


def _check_labels(split: str, frames: dict[str, Frame]) -> list[str]:
    """Every image has the label file training and evaluation read (labelIds; see the module docstring)."""
    images = [n for n, f in frames.items() if "image" in f.sizes]
    missing = [n for n in images if "labelIds" not in frames[n].sizes]
    if not missing:
        return []
    hint = f" (expected gtFine/{split}/<city>/<frame>{KINDS['labelIds'][1]})"
    return [_line(split, f"{len(missing)} of {len(images)} images have no gtFine labelIds", missing, hint=hint)]


def _check_headers(root: Path, split: str, frames: dict[str, Frame], expected: Expected, workers: int) -> list[str]:
    """PNG signature and IHDR of every file; sizes against ``expected.size`` (or against the frame's image)."""
    files = [(n, kind, f.path(root, split, n, kind))
             for n, f in frames.items() if "image" in f.sizes for kind in f.sizes]
    with ThreadPoolExecutor(workers) as pool:  # I/O bound: threads hide network-filesystem latency
        headers = list(pool.map(png_header, [p for _, _, p in files]))
    bad: dict[str, dict[str, str]] = {}  # problem -> {name: detail}
    image_size = {n: h[:2] for (n, kind, _), h in zip(files, headers) if kind == "image" and not isinstance(h, str)}
    for (name, kind, _), header in zip(files, headers):
        what = "images" if kind == "image" else f"{kind} files"
        if isinstance(header, str):
            bad.setdefault(f"{what} are unreadable", {})[name] = header
            continue
        width, height, depth, colour = header
        want = expected.size or image_size.get(name)
        if want and (width, height) != tuple(want):
            bad.setdefault(f"{what} are not {want[0]}x{want[1]}", {})[name] = f"{width}x{height}"
        if kind != "image" and (depth != 8 or colour not in (0, 3)):
            detail = f"bit depth {depth}, colour type {colour}"
            bad.setdefault(f"{what} are not 8-bit single-channel PNGs", {})[name] = detail
    return [_line(split, f"{len(d)} {problem}", list(d), d) for problem, d in bad.items()]


def _check_decode(root: Path, split: str, frames: dict[str, Frame], workers: int, progress: bool) -> list[str]:
    from tqdm import tqdm  # only the deep check shows a bar

    files = [(n, f.path(root, split, n, kind)) for n, f in frames.items() if "image" in f.sizes for kind in f.sizes]
    with ProcessPoolExecutor(workers) as pool:
        errors = list(tqdm(pool.map(decode_error, [p for _, p in files], chunksize=16), total=len(files),
                           desc=f"decode {split}", unit="file", disable=None if progress else True))
    failed = {str(p.relative_to(root)): e for (_, p), e in zip(files, errors) if e}
    return [_line(split, f"{len(failed)} files do not decode", list(failed), failed)] if failed else []


def verify(root: str | Path, expected: Expected = CITYSCAPES, deep: bool = False, allow_partial: bool = False,
           workers: int | None = None, progress: bool = True) -> VerifyResult:
    """Check ``root`` against ``expected``; every problem is in ``result.problems`` (empty: verified)."""
    root = Path(root)
    workers = workers or os.cpu_count() or 1
    if not root.is_dir():
        return VerifyResult(root, expected, {}, [f"dataset root {root} does not exist (download: {DOWNLOAD_URL}, "
                                                  f"then `ifbf data prepare --zips DIR --out {root}`)"])
    splits = {split: scan_split(root, split) for split in sorted(set(present_splits(root)) | set(expected.counts))}
    problems: list[str] = []
    for split, count in expected.counts.items():
        frames = splits[split]
        problems += _check_counts(root, split, frames, count, allow_partial)
        problems += _check_labels(split, frames)
        problems += _check_headers(root, split, frames, expected, min(32, 4 * workers))
        if deep:
            problems += _check_decode(root, split, frames, workers, progress)
    result = VerifyResult(root, expected, splits, problems, allow_partial, deep)
    if not any(result.counts().values()) and not any("images;" in p for p in problems):
        problems.append(f"no images at all under {root / 'leftImg8bit'}")
    return result


def manifest_paths(root: Path) -> list[Path]:
    """Where the manifest may be: in the root, next to it (read-only root), or in the ifbf cache."""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return [root / MANIFEST, root.parent / f"{root.name}.{MANIFEST}", cache_root() / "datasets" / f"{key}.{MANIFEST}"]


def manifest_of(result: VerifyResult) -> dict:
    return {
        "format": 1,
        "dataset": result.expected.name,
        "root": str(result.root.resolve()),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "digest": result.digest,
        "partial": result.partial,
        "deep": result.deep,
        "expected": result.expected.counts,
        "counts": result.counts(),
        "splits": {s: {n: f.sizes for n, f in frames.items()} for s, frames in result.splits.items()},
    }


def write_manifest(result: VerifyResult) -> Path:
    """Write the manifest of a verified dataset to the first writable place of ``manifest_paths``."""
    if not result.ok:
        raise IfbfError(f"not writing a manifest for {result.root}: it failed verification")
    text = json.dumps(manifest_of(result), indent=1, sort_keys=False) + "\n"
    for path in manifest_paths(result.root):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            tmp.write_text(text)
            os.replace(tmp, path)
            return path
        except OSError:
            continue
    raise IfbfError(f"cannot write the dataset manifest anywhere: {', '.join(map(str, manifest_paths(result.root)))}")


def read_manifest(root: str | Path) -> dict | None:
    """The manifest of the last successful verify of ``root`` (None if never verified). The root's own
    manifest travels with it; the ones beside it or in the cache count only for the path they name."""
    root = Path(root)
    for i, path in enumerate(manifest_paths(root)):
        if path.is_file():
            manifest = json.loads(path.read_text())
            if i == 0 or manifest.get("root") == str(root.resolve()):
                return manifest
    return None


def configured_root(cfg: DataConfig) -> Path | None:
    """The Cityscapes root a config names: data.root, else $CITYSCAPES_DATASET (None when neither is set)."""
    root = cfg.root or os.environ.get("CITYSCAPES_DATASET")
    return Path(root).expanduser() if root else None


def verify_config(cfg: DataConfig, allow_partial: bool = False) -> VerifyResult:
    """The fast verify of the dataset a config trains on, against ``expected_for(cfg)`` (the synthetic
    dataset is generated first); the manifest is written when it passes. For checks before planning."""
    expected = expected_for(cfg)
    if cfg.dataset == "synthetic":
        root = ensure_dataset(cfg.synth, cfg.root)
    elif (root := configured_root(cfg)) is None:
        return VerifyResult(Path(), expected, {}, [NO_ROOT])
    result = verify(root, expected, allow_partial=allow_partial, progress=False)
    if result.ok:
        write_manifest(result)
    return result
