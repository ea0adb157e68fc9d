"""Cityscapes (and the synthetic dataset in its layout): discovery, decoding, labelId -> trainId.

Every problem with the files is one ``DataError`` that names the file and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ifbf._torchvision import torchvision  # noqa: F401 - must precede any torchvision submodule import
from ifbf.config import DataConfig
from ifbf.data.labels import ID_TO_TRAIN, UNKNOWN
from ifbf.data.synth import ensure_dataset
from ifbf.data.verify import NO_ROOT, configured_root
from ifbf.errors import DataError
from torchvision import tv_tensors  # noqa: E402

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


@dataclass(frozen=True)
class Sample:
    name: str  # <city>_<seq>_<frame>
    image: Path
    label: Path | None


def resolve_root(cfg: DataConfig) -> Path:
    """The dataset root: data.root, else $CITYSCAPES_DATASET; for synthetic data, generated on first use."""
    if cfg.dataset == "synthetic":
        return ensure_dataset(cfg.synth, cfg.root)
    path = configured_root(cfg)
    if path is None:
        raise DataError(NO_ROOT)
    if not path.is_dir():
        raise DataError(f"Cityscapes root {path} does not exist (from data.root or CITYSCAPES_DATASET)")
    return path


def find_samples(root: Path, split: str, with_labels: bool = True) -> list[Sample]:
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise DataError(f"split {split!r} not found: {image_dir} is missing (is {root} a Cityscapes root?)")
    images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
    if not images:
        raise DataError(f"split {split!r} has no images: nothing matches {image_dir}/*/*{IMAGE_SUFFIX}")
    samples = []
    for image in images:
        name = image.name[: -len(IMAGE_SUFFIX)]
        label = root / "gtFine" / split / image.parent.name / f"{name}{LABEL_SUFFIX}"
        if with_labels and not label.is_file():
            raise DataError(f"image {image} has no label: expected {label}")
        samples.append(Sample(name, image, label if with_labels else None))
    return samples


def read_png(path: Path, mode: str | None = None) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert(mode) if mode else img)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot read PNG {path}: {err}") from None


def read_train_ids(path: Path) -> np.ndarray:
    """labelId PNG -> trainIds (uint8, 255 = ignore); an id outside the Cityscapes table is an error."""
    ids = read_png(path)
    if ids.ndim != 2 or ids.dtype != np.uint8:
        raise DataError(f"label {path} is not a single-channel 8-bit labelId PNG (shape {ids.shape}, {ids.dtype})")
    train = ID_TO_TRAIN[ids]
    if (train == UNKNOWN).any():
        bad = sorted(set(np.unique(ids[train == UNKNOWN]).tolist()))
        raise DataError(f"label {path} has label ids {bad} that are not in the Cityscapes label table")
    return train


Transform = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[torch.Tensor, torch.Tensor]]


class CityscapesDataset(torch.utils.data.Dataset):
    """Items are (image, trainId mask, name). An item may be requested as ``(index, seed)``: the random
    transforms then draw from ``seed``, which makes augmentation a function of the iteration (exact
    resume, and the same global batch under any number of processes)."""

    def __init__(self, root: Path, split: str | Sequence[str], transform: Transform | None = None,
                 with_labels: bool = True, target_dtype: torch.dtype = torch.long) -> None:
        splits = (split,) if isinstance(split, str) else tuple(split)  # several splits are concatenated
        self.root, self.split, self.transform, self.target_dtype = root, "+".join(splits), transform, target_dtype
        self.samples = [sample for s in splits for sample in find_samples(root, s, with_labels)]
        self.cache = None  # a data.cache.DecodedCache of these samples: decoded arrays instead of PNGs

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask | None]:
        sample = self.samples[index]
        if self.cache is not None:
            image, train = self.cache.image(index), self.cache.label(index)
            mask = tv_tensors.Mask(torch.from_numpy(train)) if sample.label is not None else None
            return tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)), mask
        image = read_png(sample.image, "RGB")
        mask = None
        if sample.label is not None:
            train = read_train_ids(sample.label)
            if train.shape != image.shape[:2]:
                raise DataError(
                    f"size mismatch: image {sample.image} is {image.shape[1]}x{image.shape[0]} but its label "
                    f"{sample.label} is {train.shape[1]}x{train.shape[0]}"
                )
            mask = tv_tensors.Mask(torch.from_numpy(train.copy()))
        return tv_tensors.Image(torch.from_numpy(image.copy()).permute(2, 0, 1)), mask

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, str]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        image, mask = self.load(index)
        if mask is None:
            mask = tv_tensors.Mask(torch.full(image.shape[-2:], 255, dtype=torch.uint8))
        if self.transform is not None:
            if seed is None:
                image, mask = self.transform(image, mask)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    image, mask = self.transform(image, mask)
        return image, mask.to(self.target_dtype), self.samples[index].name
