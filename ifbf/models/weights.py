"""ImageNet weights per backbone: resolve, describe, load (strictly), fetch.

Config: ``model.weights.<key>`` with key = the backbone (``resnet101``) for torchvision's stem, or
``resnet101_deep`` / ``resnet101_deep_v1c`` for the deep stems (``ifbf.config.weights_key``). The value
is a path, ``none`` (from scratch on purpose) or null (not given). A run's identity holds the file's
sha256, not its path (``ifbf.identity.identity``).

Files understood (any of them inside a ``state_dict`` or ``model`` wrapper, with or without a
``module.`` / ``backbone.`` prefix; ``fc.*`` is dropped):
- torchvision ``resnet*`` state dicts: ``conv1.weight`` (64, 3, 7, 7), ``bn1.*``, ``layer1.0.conv1.weight``...
- CCNet / pytorch-segmentation-toolbox deep stem (MIT ``resnet101-imagenet.pth``): ``conv1/bn1``
  3->64 stride 2, ``conv2/bn2`` 64->64, ``conv3/bn3`` 64->128, layers as torchvision.
- mmsegmentation / mmcv ResNetV1c (``resnet101_v1c``): ``stem.0`` conv 3->32, ``stem.1`` BN,
  ``stem.3`` conv 32->32, ``stem.4`` BN, ``stem.6`` conv 32->64, ``stem.7`` BN, layers as torchvision.
"""

from __future__ import annotations

import re
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.hub

from ifbf._torchvision import torchvision
from ifbf.config import ModelConfig
from ifbf.identity import weights_key, weights_path
from ifbf.identity import file_digest
from ifbf.errors import IfbfError
from ifbf.models.backbone import DEEP_STEMS, ResNetBackbone
from ifbf.models.norm import backbone_norm

__all__ = ["describe_weights", "fetch_weights", "file_digest", "load_backbone_weights", "resolve_weights",
           "weights_record"]

# mmseg's nn.Sequential stem -> the CCNet names our deep stems use.
MMSEG_STEM = {"stem.0.": "conv1.", "stem.1.": "bn1.", "stem.3.": "conv2.", "stem.4.": "bn2.",
              "stem.6.": "conv3.", "stem.7.": "bn3."}
# (bottleneck blocks?, blocks per stage) -> depth.
DEPTHS = {(False, (2, 2, 2, 2)): "resnet18", (False, (3, 4, 6, 3)): "resnet34",
          (True, (3, 4, 6, 3)): "resnet50", (True, (3, 4, 23, 3)): "resnet101"}
# Deep-stem ImageNet weights outside torchvision: (stem, depth) -> URL.
DEEP_URLS = {
    ("deep", "resnet50"): "http://sceneparsing.csail.mit.edu/model/pretrained_resnet/resnet50-imagenet.pth",
    ("deep", "resnet101"): "http://sceneparsing.csail.mit.edu/model/pretrained_resnet/resnet101-imagenet.pth",
    ("deep_v1c", "resnet50"): "https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth",
    ("deep_v1c", "resnet101"): "https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth",
}
STEM_NAMES = {"torchvision": "torchvision's 7x7 stem", "deep": "a deep stem 64-64-128 (CCNet)",
              "deep_v1c": "a deep stem 32-32-64 (mmseg v1c)"}


@dataclass(frozen=True)
class WeightsInfo:
    """What a checkpoint looks like: its stem, depth (by blocks per stage) and tensors."""

    stem: str  # torchvision | deep | deep_v1c | "deep (W1-W2-W3)" | unknown
    depth: str  # resnet18 ... resnet101, or "unknown"
    tensors: int
    params: int


def resolve_weights(model: ModelConfig) -> tuple[Path | None, str | None]:
    """(path, sha256) of the weights this model loads, or (None, None) to train from scratch."""
    path = weights_path(model)
    return (path, file_digest(path)) if path is not None else (None, None)


def weights_record(model: ModelConfig) -> dict[str, str | None]:
    """For env.json: which ``model.weights`` entry the run used, its path and sha256 (None: from scratch)."""
    path, digest = resolve_weights(model)
    return {"key": f"model.weights.{weights_key(model)}", "path": str(path.resolve()) if path else None, "sha256": digest}


def fetch_command(backbone: str, stem: str) -> str:
    """The command that downloads the published ImageNet weights of ``backbone`` with ``stem``."""
    return f"`ifbf weights fetch {backbone}{'' if stem == 'torchvision' else f' --variant {stem}'}`"


def unreadable(path: Path, err: Exception, fetch: str) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``, in our words: torch's own advice includes
    retrying with ``weights_only=False``, which runs whatever code the file holds, so it is never repeated."""
    text = str(err)
    with open(path, "rb") as f:
        head = f.read(64)
    if not (head.startswith(b"PK") or head[:1] == b"\x80"):  # neither a torch zip nor a legacy pickle
        kind = "an empty file" if not head else "text" if head.isascii() else "another format"
        return f"{path} is not a torch checkpoint ({kind}, it starts with {head[:24]!r}): download it with {fetch}"
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (f"{path} holds pickled Python objects{what}, not only tensors, and ifbf never runs code from a "
                f"weights file: save just the state dict (torch.save(model.state_dict(), PATH)) or download "
                f"the published file with {fetch}")
    return (f"{path} is truncated or damaged ({path.stat().st_size} bytes; a torch checkpoint whose end is "
            f"missing or corrupt): download it again with {fetch} and compare its sha256")


def read_checkpoint(path: str | Path, fetch: str = "`ifbf weights fetch`") -> dict[str, torch.Tensor]:
    """The backbone tensors of a checkpoint, in our key layout (deep stems as conv1..bn3), fc dropped.
    ``fetch``: the command that downloads the right file, named when this one cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise IfbfError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets one clear message
        raise IfbfError(unreadable(path, err, fetch)) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise IfbfError(f"{path} is not a state dict (name -> tensor), nor one wrapped in 'state_dict' or 'model'")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):  # a whole mmseg segmentor: keep its backbone
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    out = {}
    for key, value in state.items():
        for old, new in MMSEG_STEM.items():
            if key.startswith(old):
                key = new + key.removeprefix(old)
        if not key.startswith("fc."):
            out[key] = value
    return out


def inspect_state(state: dict[str, torch.Tensor]) -> WeightsInfo:
    """Guess stem and depth from shapes and block counts."""
    conv1 = state.get("conv1.weight")
    if conv1 is None or conv1.dim() != 4:
        stem = "unknown"
    elif conv1.shape[-1] == 7:
        stem = "torchvision"
    else:
        widths = tuple(state[f"conv{i}.weight"].shape[0] for i in (1, 2, 3) if f"conv{i}.weight" in state)
        stem = next((name for name, w in DEEP_STEMS.items() if w == widths), f"deep ({'-'.join(map(str, widths))})")
    blocks = tuple(
        len({m.group(1) for k in state if (m := re.match(rf"layer{i}\.(\d+)\.", k))}) for i in (1, 2, 3, 4)
    )
    depth = DEPTHS.get(("layer1.0.conv3.weight" in state, blocks), "unknown")
    return WeightsInfo(stem, depth, len(state), sum(v.numel() for k, v in state.items() if _is_param(k)))


def _is_param(key: str) -> bool:
    return not key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def _comparable(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``num_batches_tracked`` is optional: older torchvision files and InPlace-ABN have none."""
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def _hint(info: WeightsInfo, backbone: ResNetBackbone) -> str:
    """The fix first: the file the config asks for. Switching ``model.stem`` to fit the file is named only as
    the deviation it is (another architecture, so another run identity; the paper preset uses the deep stem)."""
    right = fetch_command(backbone.name, backbone.stem)
    hints = []
    if info.stem != backbone.stem:
        deviation = (f"; only as a deliberate deviation from the recipe (it changes the run's identity) would "
                     f"model.stem={info.stem} use this file") if info.stem in STEM_NAMES else ""
        hints.append(f"this file has {STEM_NAMES.get(info.stem, info.stem + ' stem')}, model.stem={backbone.stem} "
                     f"needs {STEM_NAMES[backbone.stem]}: give that file ({right}){deviation}")
    if info.depth not in ("unknown", backbone.name):
        key = info.depth + ("" if info.stem == "torchvision" else "_" + info.stem)
        hints.append(f"this file looks like a {info.depth}, not a {backbone.name}: it is the file for {key} "
                     f"(--weights {key}=PATH); the {backbone.name} file comes from {right}")
    return "; ".join(hints) or f"is it an ImageNet ResNet checkpoint? ({right} downloads the right one)"


def load_backbone_weights(backbone: ResNetBackbone, path: str | Path, where: str = "model.weights") -> None:
    """Load ImageNet weights into ``backbone`` strictly: any missing, unexpected or wrongly shaped
    backbone tensor is an error naming the keys and what the file looks like."""
    state = read_checkpoint(path, fetch_command(backbone.name, backbone.stem))
    theirs, own = _comparable(state), _comparable(backbone.state_dict())
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(theirs) if own[k].shape != theirs[k].shape)
    if missing or unexpected or wrong_shape:
        parts = [
            f"{label} {len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
            if keys
        ]
        raise IfbfError(
            f"{where}: {path} does not fit a {backbone.name} with model.stem={backbone.stem}: "
            f"{'; '.join(parts)}. {_hint(inspect_state(state), backbone)}"
        )
    result = backbone.load_state_dict(theirs, strict=False)
    assert not result.unexpected_keys and all(k.endswith("num_batches_tracked") for k in result.missing_keys)


def check_file(model: ModelConfig) -> str | None:
    """None when the weights file of ``model`` exists and loads into its backbone; else the problem, one line."""
    try:
        path = weights_path(model)
        if path is None:
            return None
        target = ResNetBackbone(model.backbone, backbone_norm("bn"), stem=model.stem,
                                dilate_first_block=model.dilate_first_block)
        load_backbone_weights(target, path, f"model.weights.{weights_key(model)}")
    except IfbfError as err:
        where = f"model.weights.{weights_key(model)}"
        return str(err) if str(err).startswith(where) else f"{where}: {err}"
    return None


def build_backbone(model: ModelConfig) -> ResNetBackbone:
    """The backbone of ``model`` (its norm, stem, dilation) with its ImageNet weights loaded, if any."""
    iabn = model.norm.startswith("inplace_abn")
    backbone = ResNetBackbone(model.backbone, backbone_norm(model.norm), inplace_safe=not iabn, stem=model.stem,
                              dilate_first_block=model.dilate_first_block, output_stride=model.output_stride,
                              multi_grid=model.multi_grid)
    path = weights_path(model)
    if path is not None:
        load_backbone_weights(backbone, path, f"model.weights.{weights_key(model)}")
    return backbone


def describe_weights(path: str | Path, backbone: str | None = None, stem: str | None = None) -> str:
    """Several lines: what the file is, its sha256, and (with ``backbone``) whether it loads."""
    state = read_checkpoint(path)
    info = inspect_state(state)
    stem_name = STEM_NAMES.get(info.stem, info.stem)
    guessed_key = info.depth if info.stem == "torchvision" else f"{info.depth}_{info.stem}"
    lines = [
        f"file:     {Path(path).resolve()}",
        f"sha256:   {file_digest(path)}",
        f"looks:    {info.depth} with {stem_name} ({info.tensors} tensors, {info.params / 1e6:.2f} M parameters"
        " without fc)",
        f"use as:   model.weights.{guessed_key}={Path(path).resolve()}",
    ]
    if backbone is not None:
        stem = stem or (info.stem if info.stem in STEM_NAMES else "torchvision")
        target = ResNetBackbone(backbone, backbone_norm("bn"), stem=stem)
        try:
            load_backbone_weights(target, path, "check")
            lines.append(f"loads:    yes, into {backbone} with model.stem={stem}")
        except IfbfError as err:
            lines.append(f"loads:    NO: {err}")
    return "\n".join(lines)


def weights_url(depth: str, variant: str) -> str:
    """Download URL of ImageNet weights: a torchvision enum value (IMAGENET1K_V1, _V2) or a deep stem."""
    if variant in DEEP_STEMS:
        if (variant, depth) not in DEEP_URLS:
            raise IfbfError(f"no known {variant}-stem ImageNet weights for {depth} (known: resnet50, resnet101)")
        return DEEP_URLS[variant, depth]
    enum = f"{depth.replace('resnet', 'ResNet')}_Weights"
    try:
        return torchvision.models.get_weight(f"{enum}.{variant}").url
    except (ValueError, KeyError, AttributeError):
        known = [w.name for w in torchvision.models.get_model_weights(depth)]
        raise IfbfError(
            f"unknown variant {variant!r} for {depth} (choose from {', '.join(known)}, {', '.join(DEEP_STEMS)})"
        ) from None


def fetch_weights(depth: str, variant: str = "IMAGENET1K_V1") -> tuple[Path, str]:
    """Download ImageNet weights into torch's hub cache (once); returns (path, sha256).

    Without network access this raises one line naming the URL to fetch by hand and where to put it.
    """
    url = weights_url(depth, variant)
    dest = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(dest), progress=True)
        except (urllib.error.URLError, OSError) as err:
            raise IfbfError(
                f"cannot download {url} ({getattr(err, 'reason', err)}): fetch it by hand and save it as {dest}"
            ) from None
    return dest, file_digest(dest)
