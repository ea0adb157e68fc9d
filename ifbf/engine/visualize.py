"""Predictions beside the ground truth (and a second run's), and the feature maps a model's own hooks
expose (``models.features``: the fusion of its paper's Figure 5).

    ifbf visualize predictions --run RUN_DIR [--compare RUN_DIR_B] --split val --n 8 --out DIR
    ifbf visualize features --run RUN_DIR --image FILE --out DIR
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from ifbf._torchvision import torchvision  # noqa: F401 - must precede any torchvision submodule import
from ifbf.data.cityscapes import read_png
from ifbf.data.labels import PALETTE
from ifbf.data.loader import eval_dataset
from ifbf.data.transforms import eval_transform
from ifbf.engine.checkpoint import locate, model_from_checkpoint
from ifbf.engine.dist import setup
from ifbf.engine.evaluate import predict, with_inference
from ifbf.errors import IfbfError
from ifbf.models.features import FeatureHooks, require_figure_arch
from ifbf.store.safefile import atomic_write_bytes, make_dirs
from torchvision import tv_tensors  # noqa: E402

DIFF_COLOUR = (255, 230, 0)  # the paper marks differing regions in yellow


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """trainIds (H, W) -> RGB in the Cityscapes palette (ignore: black)."""
    return PALETTE[train_ids.astype(np.uint8)]


def denormalize(image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    x = image.detach().cpu().float() * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def difference_outline(a: np.ndarray, b: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Boolean mask of the outline of regions where two label maps differ (the paper's yellow lines)."""
    diff = a != b
    padded = np.pad(diff, thickness)
    inner = np.ones_like(diff)
    for dy in range(-thickness, thickness + 1):
        for dx in range(-thickness, thickness + 1):
            inner &= padded[thickness + dy : thickness + dy + diff.shape[0], thickness + dx : thickness + dx + diff.shape[1]]
    return diff & ~inner


def _titled(panels: list[tuple[str, np.ndarray]], gap: int = 4, title_h: int = 14) -> Image.Image:
    h, w = panels[0][1].shape[:2]
    sheet = Image.new("RGB", (len(panels) * w + (len(panels) - 1) * gap, h + title_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (title, rgb) in enumerate(panels):
        x = i * (w + gap)
        sheet.paste(Image.fromarray(rgb), (x, title_h))
        draw.text((x + 2, 1), title, fill="black")
    return sheet


def _load(run: str, split: str | None):
    """(config with ``split`` to evaluate, model from the run's checkpoint, device)."""
    source = locate(run)
    cfg = with_inference(source.cfg, split=split)
    _, device = setup(cfg)
    model, _ = model_from_checkpoint(cfg, source.checkpoint, device, "visualize")
    return cfg, model, device


def predictions(run: str, out: Path, split: str = "val", n: int = 8, compare: str | None = None,
                labels: tuple[str | None, str | None] = (None, None)) -> list[Path]:
    """Figure 6: input | ground truth | prediction (| second run's prediction | where they differ); the
    prediction panels are titled by ``labels`` (e.g. the table rows the runs belong to), else the run dir."""
    cfg, model, device = _load(run, split)
    other = _load(compare, split) if compare else None
    dataset = eval_dataset(cfg, split)
    make_dirs(out)
    written = []
    dtype = next(model.parameters()).dtype
    for index in range(min(n, len(dataset))):
        image, target, name = dataset[index]
        x = image.unsqueeze(0).to(device, dtype)
        pred = predict(model, x, cfg.eval, cfg.model.num_classes).argmax(1)[0].cpu().numpy()
        gt = target.numpy()
        panels = [("input", denormalize(image, cfg.data.mean, cfg.data.std)), ("ground truth", colorize(gt)),
                  (labels[0] or Path(run).name, colorize(pred))]
        if other:
            ocfg, omodel, odevice = other
            opred = predict(omodel, image.unsqueeze(0).to(odevice, next(omodel.parameters()).dtype), ocfg.eval,
                            ocfg.model.num_classes).argmax(1)[0].cpu().numpy()
            marked = colorize(pred).copy()
            marked[difference_outline(pred, opred)] = DIFF_COLOUR
            panels += [(labels[1] or Path(compare).name, colorize(opred)), ("differences (yellow)", marked)]
        path, buffer = out / f"{name}.png", io.BytesIO()
        _titled(panels).save(buffer, format="PNG")
        atomic_write_bytes(path, buffer.getbuffer())
        written.append(path)
    return written


def heatmap(feature: torch.Tensor) -> np.ndarray:
    """Channel-aggregated activation (mean |x| over channels), normalised to [0, 1]."""
    m = feature.abs().mean(0).float()
    m = (m - m.min()) / (m.max() - m.min()).clamp_min(1e-12)
    return m.cpu().numpy()


def features(run: str, image_path: Path, out: Path) -> list[Path]:
    """Figure 5 for one image, plus a plot of the learned fusion weights W_h / W_l."""
    # matplotlib only for this figure: Figure 6 and the library's other users do not need it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    require_figure_arch(locate(run).cfg.model.arch)
    cfg, model, device = _load(run, None)
    if not image_path.is_file():
        raise IfbfError(f"image not found: {image_path}")
    rgb = read_png(image_path, "RGB")
    image = eval_transform(cfg.data)(tv_tensors.Image(torch.from_numpy(rgb.copy()).permute(2, 0, 1)))
    hooks = FeatureHooks(model)
    feats = hooks.capture(image.unsqueeze(0).to(device, next(model.parameters()).dtype))
    hooks.remove()
    make_dirs(out)
    panels = [("input", rgb), ("low-level (S1)", heatmap(feats.low)), ("deep (ASPP, upsampled)", heatmap(feats.deep)),
              ("concatenation", heatmap(feats.concat))]
    panels.append(("balanced fusion", heatmap(feats.fused)) if feats.fused is not None else ("(no balanced fusion)", None))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.2))
    for ax, (title, data) in zip(axes, panels):
        ax.axis("off")
        ax.set_title(title, fontsize=8)
        if data is not None:
            ax.imshow(data, cmap=None if data.ndim == 3 else "inferno")
    stem = out / f"{image_path.stem}_features"
    written = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in written:
        _save(fig, p)
    plt.close(fig)
    if feats.weights is not None:
        w = feats.weights.float().cpu().numpy()
        hc = feats.high_channels
        fig, ax = plt.subplots(figsize=(7, 2.6))
        ax.bar(np.arange(hc), w[:hc], width=1.0, color="#2f6fdb", label=f"W_h (deep, mean {w[:hc].mean():.3f})")
        ax.bar(np.arange(hc, len(w)), w[hc:], width=1.0, color="#e4572e", label=f"W_l (low-level, mean {w[hc:].mean():.3f})")
        ax.set_xlabel("channel of the concatenation")
        ax.set_ylabel("balance weight W")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        ax.set_title("Fusion 1: learned weights for this image (eq. 2)", fontsize=9)
        wstem = out / f"{image_path.stem}_fusion_weights"
        for suffix in (".png", ".pdf"):
            _save(fig, wstem.with_suffix(suffix))
            written.append(wstem.with_suffix(suffix))
        plt.close(fig)
    return written


def _save(fig, path: Path) -> None:
    """One format of a figure, rendered in memory and written atomically (a full disk keeps the previous file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix[1:], dpi=150, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getbuffer())
