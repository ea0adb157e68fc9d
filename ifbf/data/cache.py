"""Decoded cache: each split's images (N, H, W, 3) and trainId labels (N, H, W) as uint8 ``.npy`` files that
are memory-mapped, so a training sample costs a page-cache copy instead of two PNG decodes (~50 ms).

Layout (``<root>/ifbf_cache`` unless ``data.cache_dir`` says otherwise)::

    <split>/images.npy   uint8 (N, H, W, 3), the RGB pixels of read_png(image, "RGB")
    <split>/labels.npy   uint8 (N, H, W), read_train_ids(label); absent for a split without labels
    <split>/index.json   names, source file sizes, shape, and how many frames are written (resumable)

Writing is resumable: ``index.json`` records the frames written so far (after a flush), and a rerun continues
from there. A cache is used only when it is complete and its file list matches the split on disk (names and
file sizes); otherwise the dataset decodes PNGs, or raises when the cache is stale. Disk cost: 6 MiB + 2 MiB
per 2048x1024 frame (about 23 GiB for train + val).
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ifbf.data.cityscapes import DataError, Sample, find_samples, read_png, read_train_ids
from ifbf.store.safefile import atomic_write_text, raise_if_full

CACHE_DIRNAME = "ifbf_cache"
FLUSH_EVERY = 16
VERSION = 1


def cache_root(root: Path, cache_dir: str | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else root / CACHE_DIRNAME


def _sources(samples: list[Sample]) -> list[list]:
    """What the cache is checked against: name and byte size of every image and label file."""
    return [[s.name, s.image.stat().st_size, s.label.stat().st_size if s.label else None] for s in samples]


def _read_index(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_index(path: Path, index: dict) -> None:
    atomic_write_text(path, json.dumps(index))


def _open_array(path: Path, mode: str, shape: tuple[int, ...]) -> np.ndarray:
    """A memory-mapped uint8 ``.npy``; a new one has its blocks reserved now (``posix_fallocate``), so a full
    disk is ``NoSpace`` here rather than a SIGBUS when a page of the mapping is written later."""
    array = np.lib.format.open_memmap(path, mode, np.uint8, shape)
    if mode == "w+":
        try:
            with path.open("r+b") as f:
                os.posix_fallocate(f.fileno(), 0, path.stat().st_size)
        except OSError as err:
            path.unlink(missing_ok=True)
            raise_if_full(err, path)
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without it: as before
                raise
    return array


class _LineBar:
    """Stand-in for tqdm when it is not installed: a line every 5%."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool) -> None:
        self.total, self.n, self.desc, self.enabled = total, initial, desc, enabled

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.enabled and self.n == self.total or self.n % max(1, self.total // 20) == 0:
            print(f"{self.desc}: {self.n}/{self.total}", flush=True)

    def close(self) -> None:
        pass


def _progress(total: int, initial: int, desc: str, enabled: bool):
    """A progress bar with update() and close(): tqdm when installed, else plain lines."""
    try:
        from tqdm import tqdm  # local: optional dependency of one command
    except ImportError:
        return _LineBar(total, initial, desc, enabled)
    return tqdm(total=total, initial=initial, desc=desc, unit="frame", disable=not enabled)


def write_split(root: Path, split: str, out: Path, progress: bool = True) -> Path:
    """Decode every frame of ``split`` into ``out/<split>``; resumes an interrupted run. Returns the folder."""
    labelled = (root / "gtFine" / split).is_dir()
    samples = find_samples(root, split, with_labels=labelled)
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    first = read_png(samples[0].image, "RGB")
    height, width = first.shape[:2]
    sources = _sources(samples)
    index = _read_index(folder / "index.json")
    fresh = not (index and index.get("version") == VERSION and index["sources"] == sources
                 and index["shape"] == [height, width] and (folder / "images.npy").is_file())
    if fresh:
        index = {"version": VERSION, "split": split, "shape": [height, width], "labels": labelled,
                 "sources": sources, "written": 0}
    n = len(samples)
    mode = "w+" if fresh else "r+"
    if fresh:  # the arrays are about to be rewritten: no index may vouch for them until they are
        (folder / "index.json").unlink(missing_ok=True)
    images = _open_array(folder / "images.npy", mode, (n, height, width, 3))
    labels = _open_array(folder / "labels.npy", mode, (n, height, width)) if labelled else None
    if fresh:
        _write_index(folder / "index.json", index)
    bar = _progress(n, index["written"], f"cache {split}", progress)
    for i in range(index["written"], n):
        image = read_png(samples[i].image, "RGB")
        if image.shape[:2] != (height, width):
            raise DataError(f"{samples[i].image} is {image.shape[1]}x{image.shape[0]}, but the cache holds "
                            f"{width}x{height} frames: every frame of a split must have one size")
        images[i] = image
        if labels is not None:
            labels[i] = read_train_ids(samples[i].label)
        if (i + 1) % FLUSH_EVERY == 0 or i + 1 == n:
            images.flush()
            if labels is not None:
                labels.flush()
            index["written"] = i + 1
            _write_index(folder / "index.json", index)
        bar.update(1)
    bar.close()
    return folder


def write_cache(root: Path, splits: Iterable[str], out: Path, progress: bool = True) -> list[Path]:
    return [write_split(root, split, out, progress) for split in splits]


@dataclass
class DecodedCache:
    """Read side of one split's cache; the arrays are opened lazily (once per loader worker, not pickled)."""

    folder: Path
    labelled: bool

    def __post_init__(self) -> None:
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    def __getstate__(self) -> dict:
        return {"folder": self.folder, "labelled": self.labelled}

    def __setstate__(self, state: dict) -> None:
        self.folder, self.labelled = state["folder"], state["labelled"]
        self.__post_init__()

    def _open(self) -> None:
        # copy-on-write mapping: writable views for torch.from_numpy, nothing copied until written (never)
        self._images = np.load(self.folder / "images.npy", mmap_mode="c", allow_pickle=False)
        if self.labelled:
            self._labels = np.load(self.folder / "labels.npy", mmap_mode="c", allow_pickle=False)

    def image(self, i: int) -> np.ndarray:
        if self._images is None:
            self._open()
        return self._images[i]

    def label(self, i: int) -> np.ndarray | None:
        if self._images is None:
            self._open()
        return self._labels[i] if self._labels is not None else None


def open_cache(root: Path, split: str, samples: list[Sample], cache_dir: str | None) -> DecodedCache | None:
    """The split's cache when it exists and matches ``samples``; None when there is none; an error when stale."""
    folder = cache_root(root, cache_dir) / split
    index = _read_index(folder / "index.json")
    if index is None:
        return None
    command = f"ifbf data cache {root}" + (f" --out {cache_dir}" if cache_dir else "")
    if index.get("version") != VERSION or index["sources"] != _sources(samples):
        raise DataError(f"the decoded cache {folder} does not match split {split!r} of {root} (files changed); "
                        f"rebuild it: {command}, or delete {folder}")
    if index["written"] != len(samples):
        raise DataError(f"the decoded cache {folder} is incomplete ({index['written']}/{len(samples)} frames); "
                        f"finish it: {command} (it resumes), or delete {folder}")
    needs_labels = any(s.label is not None for s in samples)
    if needs_labels and not index["labels"]:
        return None
    return DecodedCache(folder, index["labels"])
