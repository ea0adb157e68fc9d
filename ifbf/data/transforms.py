"""Joint image/mask transforms (torchvision.transforms.v2 with tv_tensors.Mask), section 4.1 "DA"."""

from __future__ import annotations

from typing import Any

import torch

from ifbf._torchvision import torchvision  # noqa: F401 - must precede any torchvision submodule import
from ifbf.config import DataConfig
from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms import v2  # noqa: E402
from torchvision.transforms.v2 import functional as F  # noqa: E402


class RandomScale(v2.Transform):
    """Resize by a factor drawn from a fixed set (bilinear for images, nearest for masks)."""

    def __init__(self, scales: tuple[float, ...]) -> None:
        super().__init__()
        self.scales = scales

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        scale = self.scales[int(torch.randint(len(self.scales), ()))]
        h, w = v2.query_size(flat_inputs)
        return {"size": [max(1, round(h * scale)), max(1, round(w * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            # NEAREST_EXACT samples at pixel centres like bilinear does; torchvision's default NEAREST for
            # masks samples at corners, which shifts labels up to half a pixel against the image.
            out = F.resize_image(inpt.as_subclass(torch.Tensor)[None], params["size"], F.InterpolationMode.NEAREST_EXACT)
            return tv_tensors.wrap(out[0], like=inpt)
        return self._call_kernel(F.resize, inpt, params["size"], antialias=True)


def _normalize(cfg: DataConfig) -> list[v2.Transform]:
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(mean=list(cfg.mean), std=list(cfg.std)),
    ]


def train_transform(cfg: DataConfig) -> v2.Compose:
    steps: list[v2.Transform] = []
    if cfg.scales != (1.0,):
        steps.append(RandomScale(cfg.scales))
    steps.append(v2.RandomCrop(list(cfg.crop_size), pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: 255}))
    if cfg.hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps + _normalize(cfg))


def eval_transform(cfg: DataConfig) -> v2.Compose:
    return v2.Compose(_normalize(cfg))
