"""The input fast path (``data.fast_path``): the same training batches as ``transforms.train_transform``,
bit for bit, at a fraction of the host cost.

- Scale and crop are one step that draws its random numbers exactly as ``RandomScale`` then
  ``v2.RandomCrop`` do. The image is resized whole (torch's uint8 antialiased kernel, the same call);
  the mask is never resized whole: its nearest-neighbour source rows and columns are taken from torch's
  own ``NEAREST_EXACT`` kernel applied to an index ramp, and only the kept window is gathered.
- Batches leave the workers as uint8 images and uint8 masks (4x less memory traffic, pinned copies);
  ``to_device`` converts and normalises them on the device with the very calls ``v2.ToDtype`` and
  ``v2.Normalize`` make, so the values equal the default path's (tested in tests/test_loader_fast.py).
"""

from __future__ import annotations

from typing import Any

import torch

from ifbf._torchvision import torchvision  # noqa: F401 - must precede any torchvision submodule import
from ifbf.config import DataConfig
from ifbf.data.transforms import RandomScale
from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms import v2  # noqa: E402
from torchvision.transforms.v2 import functional as F  # noqa: E402

IMAGE_FILL, MASK_FILL = 0, 255


def _size_only(height: int, width: int) -> tv_tensors.Mask:
    """A tensor with this shape and no memory, for ``make_params`` (which only reads the size)."""
    return tv_tensors.Mask(torch.empty(1, dtype=torch.uint8).expand(height, width))


def nearest_source_index(size_in: int, size_out: int) -> torch.Tensor:
    """Source index of every output position of a ``NEAREST_EXACT`` resize along one axis, as torch computes it."""
    ramp = torch.arange(size_in, dtype=torch.float32).view(1, size_in, 1)
    return F.resize_image(ramp, [size_out, 1], F.InterpolationMode.NEAREST_EXACT)[0, :, 0].long()


def _window(index: torch.Tensor, start: int, length: int, pad_before: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices of ``length`` positions from ``start`` of the padded axis, and which are inside the data."""
    pos = torch.arange(start, start + length) - pad_before
    inside = (pos >= 0) & (pos < len(index))
    return index[pos.clamp(0, len(index) - 1)], inside


def scale_crop_mask(mask: torch.Tensor, size: list[int], params: dict[str, Any]) -> torch.Tensor:
    """``RandomCrop(params)(NEAREST_EXACT resize of mask to size)``, computing only the kept window."""
    height, width = mask.shape[-2:]
    rows = nearest_source_index(height, size[0])
    cols = nearest_source_index(width, size[1])
    pad_left, pad_top = (params["padding"] if params["needs_pad"] else [0, 0, 0, 0])[:2]
    top, left = (params["top"], params["left"]) if params["needs_crop"] else (0, 0)
    out_h = params["height"] if params["needs_crop"] else size[0] + 2 * pad_top
    out_w = params["width"] if params["needs_crop"] else size[1] + 2 * pad_left
    row_idx, row_in = _window(rows, top, out_h, pad_top)
    col_idx, col_in = _window(cols, left, out_w, pad_left)
    out = mask[row_idx[:, None], col_idx[None, :]]
    if not (row_in.all() and col_in.all()):
        out = out.masked_fill(~(row_in[:, None] & col_in[None, :]), MASK_FILL)
    return out


class ScaleCrop(torch.nn.Module):
    """``RandomScale(scales)`` then ``v2.RandomCrop(crop, pad_if_needed)`` with the same random draws."""

    def __init__(self, scales: tuple[float, ...], crop_size: tuple[int, int]) -> None:
        super().__init__()
        self.scale = RandomScale(scales) if scales != (1.0,) else None
        self.crop = v2.RandomCrop(list(crop_size), pad_if_needed=True,
                                  fill={tv_tensors.Image: IMAGE_FILL, tv_tensors.Mask: MASK_FILL})

    def forward(self, image: tv_tensors.Image, mask: tv_tensors.Mask) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        height, width = image.shape[-2:]
        size = self.scale.make_params([image])["size"] if self.scale is not None else [height, width]
        params = self.crop.make_params([_size_only(*size)])
        if self.scale is not None:
            image = self.scale.transform(image, {"size": size})
        image = self.crop.transform(image, params)
        window = scale_crop_mask(mask.as_subclass(torch.Tensor), size, params)
        return image, tv_tensors.Mask(window)


def fast_train_transform(cfg: DataConfig) -> v2.Compose:
    """``train_transform(cfg)`` without its final ToDtype/Normalize: uint8 out; ``to_device`` finishes."""
    steps: list[torch.nn.Module] = [ScaleCrop(cfg.scales, cfg.crop_size)]
    if cfg.hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


_STATS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _mean_std(cfg: DataConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``cfg``'s mean and std as float32 tensors on ``device``, made once: ``normalize_image`` given lists builds
    them every batch, a blocking host-to-device copy each (a device sync per batch on a GPU)."""
    key = (str(device), tuple(cfg.mean), tuple(cfg.std))
    if key not in _STATS:
        _STATS[key] = (torch.tensor(cfg.mean, dtype=torch.float32, device=device),
                       torch.tensor(cfg.std, dtype=torch.float32, device=device))
    return _STATS[key]


def normalize(image: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float32, exactly as ``v2.ToDtype(float32, scale=True)`` + ``v2.Normalize`` (the
    same calls, the mean and std already on the device)."""
    return F.normalize_image(F.to_dtype_image(image, torch.float32, scale=True), *_mean_std(cfg, image.device))


def to_device(image: torch.Tensor, target: torch.Tensor, device: torch.device, dtype: torch.dtype,
              cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a batch to the device; a fast-path (uint8) batch is normalised there. Returns (image, int64 target)."""
    image, target = image.to(device, non_blocking=True), target.to(device, non_blocking=True)
    if image.dtype == torch.uint8:
        image = normalize(image, cfg)
    return image.to(dtype), target.long()
