"""Import torchvision, working around the CUDA-only wheel on CPU-only torch.

Why this exists: torchvision 0.28.0 is the only release that pairs with torch 2.13.0, and PyPI ships it
only as a CUDA build. With the CPU torch wheel its ``_C`` extension fails to load, so the two operator
schemas it registers (``torchvision::nms`` and ``torchvision::qnms``) are missing and the Python side
raises ``RuntimeError: operator torchvision::nms does not exist`` at import time. Declaring those two
schemas ourselves lets the pure-Python parts (``torchvision.models``, ``transforms.v2``) import; ifbf
uses nothing else. On a machine with matching CUDA wheels the normal import succeeds and this module
does nothing. See docs/install.md.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

_FRAGMENT = None  # keep the library object alive: dropping it would unregister the schemas


def _declare_missing_ops() -> None:
    global _FRAGMENT
    import torch

    _FRAGMENT = torch.library.Library("torchvision", "FRAGMENT")
    _FRAGMENT.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _FRAGMENT.define(
        "qnms(Tensor dets, Tensor scores, float iou_threshold, float scale, int zero_point) -> Tensor"
    )


def import_torchvision() -> ModuleType:
    """Return the ``torchvision`` module, declaring its missing op schemas only if the import fails."""
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # drop the half-imported package before trying again
    _declare_missing_ops()
    return importlib.import_module("torchvision")


torchvision = import_torchvision()
